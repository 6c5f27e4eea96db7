// oneDNN's GRU (lbr_gru_forward: Keras's reset_after=True math) as a peer for cpu_bench.py.
//
//   onednn_gru B T I H DATA      DATA: float32 x (B,T,I), kernel (I,3H), recurrent_kernel
//                                (H,3H), bias (2,3H), all in Keras's layout; h0 = 0.
// Prints one JSON line when ready, then answers stdin commands with one JSON line each:
//   run N        N timed forward passes (inference): {"times_ms": [...]}
//   dump PATH    writes the output sequence as float32 (B,T,H): {"dumped": PATH}
// Everything outside the primitive's execute (weight reorders, the time-major transpose of x,
// allocations) happens once, before the first command, so only the GRU itself is timed.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

// Resident set size and its peak (kB) from /proc/self/status.
static long status_kb(const char *key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(f, line))
    if (line.rfind(k, 0) == 0) return std::stol(line.substr(k.size()));
  return -1;
}

static void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

int main(int argc, char **argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s B T I H DATA\n", argv[0]);
    return 2;
  }
  const memory::dim B = std::stol(argv[1]), T = std::stol(argv[2]), I = std::stol(argv[3]),
                    H = std::stol(argv[4]);
  std::vector<float> x(B * T * I), W(I * 3 * H), U(H * 3 * H), b(2 * 3 * H);
  {
    std::ifstream f(argv[5], std::ios::binary);
    for (auto *v : {&x, &W, &U, &b})
      f.read(reinterpret_cast<char *>(v->data()), v->size() * sizeof(float));
    if (!f) {
      std::fprintf(stderr, "cannot read %s\n", argv[5]);
      return 2;
    }
  }
  // Baseline: the inputs exist in the user's layout; what oneDNN allocates counts as its memory.
  reset_peak_rss();
  const long rss0 = status_kb("VmRSS");

  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  // oneDNN's native layout is time-major (tnc): transpose once, untimed (its best case).
  auto src_md = memory::desc({T, B, I}, dt::f32, tag::tnc);
  memory src(src_md, eng);
  auto *s = static_cast<float *>(src.get_data_handle());
  for (memory::dim n = 0; n < B; ++n)
    for (memory::dim t = 0; t < T; ++t)
      for (memory::dim c = 0; c < I; ++c) s[(t * B + n) * I + c] = x[(n * T + t) * I + c];
  // Keras's (I, 3H) with blocks [z|r|h] is oneDNN's ldigo with gates (u, r, o): same bytes.
  auto wl_user = memory({{1, 1, I, 3, H}, dt::f32, tag::ldigo}, eng, W.data());
  auto wi_user = memory({{1, 1, H, 3, H}, dt::f32, tag::ldigo}, eng, U.data());
  // lbr_gru bias (4, H): input+recurrent for u and r, then the input and recurrent h biases.
  memory bias({{1, 1, 4, H}, dt::f32, tag::ldgo}, eng);
  auto *bb = static_cast<float *>(bias.get_data_handle());
  for (memory::dim j = 0; j < H; ++j) {
    bb[0 * H + j] = b[0 * H + j] + b[3 * H + 0 * H + j];
    bb[1 * H + j] = b[1 * H + j] + b[3 * H + 1 * H + j];
    bb[2 * H + j] = b[2 * H + j];
    bb[3 * H + j] = b[3 * H + 2 * H + j];
  }
  auto any_w = [&](memory::dim rows) {
    return memory::desc({1, 1, rows, 3, H}, dt::f32, tag::any);
  };
  auto dst_md = memory::desc({T, B, H}, dt::f32, tag::tnc);
  auto iter_md = memory::desc({1, 1, B, H}, dt::f32, tag::ldnc);
  auto pd = lbr_gru_forward::primitive_desc(eng, prop_kind::forward_inference,
                                            rnn_direction::unidirectional_left2right, src_md,
                                            iter_md, any_w(I), any_w(H), bias.get_desc(), dst_md,
                                            iter_md);
  // Weights reordered once into the layout the primitive wants, outside the timed region.
  memory wl(pd.weights_layer_desc(), eng), wi(pd.weights_iter_desc(), eng);
  reorder(wl_user, wl).execute(strm, wl_user, wl);
  reorder(wi_user, wi).execute(strm, wi_user, wi);
  memory h0(iter_md, eng), dst(dst_md, eng), h_last(iter_md, eng);
  std::fill_n(static_cast<float *>(h0.get_data_handle()), B * H, 0.0f);
  memory scratch(pd.scratchpad_desc(), eng);
  lbr_gru_forward prim(pd);
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC_LAYER, src},     {DNNL_ARG_SRC_ITER, h0},      {DNNL_ARG_WEIGHTS_LAYER, wl},
      {DNNL_ARG_WEIGHTS_ITER, wi},   {DNNL_ARG_BIAS, bias},        {DNNL_ARG_DST_LAYER, dst},
      {DNNL_ARG_DST_ITER, h_last},   {DNNL_ARG_SCRATCHPAD, scratch}};
  auto forward = [&] {
    prim.execute(strm, args);
    strm.wait();
  };
  forward();  // warm-up: JIT kernels are generated on first use
  const long peak_kb = status_kb("VmHWM") - rss0;

  const version_t *v = version();
  std::printf(
      "{\"ready\": true, \"version\": \"%d.%d.%d\", \"isa\": %d, \"impl\": \"%s\", "
      "\"threads\": %d, \"peak_rss_delta_mb\": %.2f}\n",
      v->major, v->minor, v->patch, static_cast<int>(get_effective_cpu_isa()),
      pd.impl_info_str(), omp_get_max_threads(), peak_kb / 1024.0);
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream cmd(line);
    std::string op;
    cmd >> op;
    if (op == "run") {
      int n = 1;
      cmd >> n;
      std::printf("{\"times_ms\": [");
      for (int i = 0; i < n; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        forward();
        std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - t0;
        std::printf("%s%.6f", i ? ", " : "", ms.count());
      }
      std::printf("]}\n");
    } else if (op == "dump") {
      std::string path;
      cmd >> path;
      const auto *d = static_cast<const float *>(dst.get_data_handle());
      std::vector<float> out(B * T * H);  // back to batch-major (B, T, H)
      for (memory::dim n = 0; n < B; ++n)
        for (memory::dim t = 0; t < T; ++t)
          for (memory::dim j = 0; j < H; ++j) out[(n * T + t) * H + j] = d[(t * B + n) * H + j];
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char *>(out.data()), out.size() * sizeof(float));
      std::printf("{\"dumped\": \"%s\"}\n", path.c_str());
    } else if (op == "quit") {
      break;
    } else {
      std::printf("{\"error\": \"unknown command\"}\n");
    }
    std::fflush(stdout);
  }
  return 0;
}
