// Runs gru_forward_cuda / gru_backward_cuda (the kernels' source on host threads, through
// include/cuda_runtime.h) against the CPU kernels. See run.sh. Modes: tiny, quick, (none).
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"
#include "cuda_launch_heuristics.h"
#include "gru_cpu.h"
#include "gru_cuda.h"

using namespace gategru;

static int failures = 0;

template <typename T>
double maxdiff(const std::vector<T>& a, const std::vector<T>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

template <typename T>
void run_case(int64_t B, int64_t T_, int64_t H, bool reset_after, int mask_kind, int sms,
              CudaPath path, bool gates, bool gate_grads, unsigned seed, int64_t I = 0) {
  emu::config().sms = sms;
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd;
  auto rnd = [&](int64_t n, double s) { std::vector<T> v(n); for (auto& x : v) x = T(nd(gen) * s); return v; };
  auto xw = rnd(B * T_ * 3 * H, 1.0), h0 = rnd(B * H, 0.5), U = rnd(H * 3 * H, 1.0 / std::sqrt(double(H))), bias = rnd(3 * H, 0.3);
  // I > 0: the op's projecting form, x (B,T,I) with kernel (I,3H) and b_in instead of xw
  auto x = rnd(B * T_ * I, 1.0), W = rnd(I * 3 * H, 1.0 / std::sqrt(double(I + 1))), b_in = rnd(3 * H, 0.3);
  std::vector<char> maskc(B * T_, 1);
  if (mask_kind) {
    std::uniform_real_distribution<double> ud;
    for (auto& m : maskc) m = ud(gen) > 0.35;
    if (B > 1) for (int64_t t = 0; t < T_; ++t) maskc[1 * T_ + t] = 0;
    if (B > 2) for (int64_t t = 0; t < std::max<int64_t>(1, T_ / 2) && t < T_; ++t) maskc[2 * T_ + t] = 0;
  }
  const bool* mask = mask_kind ? reinterpret_cast<const bool*>(maskc.data()) : nullptr;
  const int64_t S = B * T_ * H;
  struct Out { std::vector<T> h_seq, h_last, z, r, hc, hu; };
  auto make = [&](Out& o, GruForwardParams<T>& p, T fill) {
    o.h_seq.assign(S, fill); o.h_last.assign(B * H, fill);
    o.z.assign(S, fill); o.r.assign(S, fill); o.hc.assign(S, fill); o.hu.assign(S, fill);
    p.batch = B; p.time = T_; p.units = H; p.reset_after = reset_after;
    if (I > 0) { p.x = x.data(); p.input_width = I; p.kernel = W.data(); p.input_bias = b_in.data(); }
    else p.xw = xw.data();
    p.h0 = h0.data(); p.recurrent_kernel = U.data(); p.recurrent_bias = bias.data(); p.mask = mask;
    p.h_seq = o.h_seq.data(); p.h_last = o.h_last.data();
    if (gates) { p.update = o.z.data(); p.reset = o.r.data(); p.candidate = o.hc.data(); p.hu_candidate = reset_after ? o.hu.data() : nullptr; }
  };
  Out cpu, gpu;
  GruForwardParams<T> pc, pg;
  make(cpu, pc, T(0));
  make(gpu, pg, T(NAN));
  gru_forward_cpu(pc, SerialWorkers());
  std::vector<unsigned char> ws(gru_forward_cuda_workspace(pg) + 1);
  const long coop0 = emu::config().coop_launches;
  int rc = gru_forward_cuda(pg, nullptr, ws.data(), ws.size() - 1, path);
  const bool went_persistent = emu::config().coop_launches > coop0;
  const double tol = sizeof(T) == 8 ? 1e-12 : 2e-5;
  double e = rc ? INFINITY : std::max(maxdiff(cpu.h_seq, gpu.h_seq), maxdiff(cpu.h_last, gpu.h_last));
  if (gates && !rc) e = std::max({e, maxdiff(cpu.z, gpu.z), maxdiff(cpu.r, gpu.r), maxdiff(cpu.hc, gpu.hc)});
  if (gates && reset_after && !rc) e = std::max(e, maxdiff(cpu.hu, gpu.hu));
  // backward on the CPU forward's outputs (needs the gates)
  double eb = 0;
  if (gates) {
    auto dhs = rnd(S, 1.0), dhl = rnd(B * H, 1.0), dz = rnd(S, 0.5), dr = rnd(S, 0.5), dhc = rnd(S, 0.5);
    std::vector<T> dxc(B * T_ * 3 * H, T(0)), dh0c(B * H, T(0)), dxg(B * T_ * 3 * H, T(NAN)), dh0g(B * H, T(NAN));
    GruBackwardParams<T> q;
    q.batch = B; q.time = T_; q.units = H; q.reset_after = reset_after; q.h0 = h0.data(); q.recurrent_kernel = U.data(); q.mask = mask;
    q.h_seq = cpu.h_seq.data(); q.update = cpu.z.data(); q.reset = cpu.r.data(); q.candidate = cpu.hc.data();
    q.hu_candidate = reset_after ? cpu.hu.data() : nullptr; q.d_h_seq = dhs.data(); q.d_h_last = (seed % 2) ? dhl.data() : nullptr;
    if (gate_grads) { q.d_update = dz.data(); q.d_reset = dr.data(); q.d_candidate = dhc.data(); }
    GruBackwardParams<T> qc = q, qg = q;
    qc.d_xw = dxc.data(); qc.d_h0 = dh0c.data(); qg.d_xw = dxg.data(); qg.d_h0 = dh0g.data();
    // d_hu (reset_after): the CPU kernel then uses it as its scratch, the GPU writes a copy
    std::vector<T> dhuc(B * T_ * 3 * H, T(0)), dhug(B * T_ * 3 * H, T(NAN));
    if (reset_after && seed % 3 != 0) { qc.d_hu = dhuc.data(); qg.d_hu = dhug.data(); }
    gru_backward_cpu(qc, SerialWorkers());
    std::vector<unsigned char> wsb(gru_backward_cuda_workspace(qg) + 1);
    const int rcb = gru_backward_cuda(qg, nullptr, wsb.data(), wsb.size() - 1, path);
    eb = rcb ? INFINITY : std::max(maxdiff(dxc, dxg), maxdiff(dh0c, dh0g));
    if (qc.d_hu && !rcb) eb = std::max(eb, maxdiff(dhuc, dhug));
    if (rcb) rc = rcb;
  }
  const bool ok = e <= tol && eb <= tol * 10;
  if (!ok) ++failures;
  std::printf("%s %s B=%ld T=%ld H=%ld I=%ld ra=%d mask=%d sms=%d path=%d(%s) gates=%d ggr=%d rc=%d fwd=%.2e bwd=%.2e\n",
              ok ? "ok  " : "FAIL", sizeof(T) == 8 ? "f64" : "f32", (long)B, (long)T_, (long)H, (long)I, reset_after, mask_kind, sms,
              int(path), went_persistent ? "coop" : "step", gates, gate_grads, rc, e, eb);
  std::fflush(stdout);
}

float widen(Half h) { return __half2float(__ushort_as_half(h.bits)); }
float widen(BFloat16 h) { return __bfloat162float(__ushort_as_bfloat16(h.bits)); }
template <typename S>
S narrow(float v) {
  if constexpr (std::is_same_v<S, Half>) return {__half_as_ushort(__float2half_rn(v))};
  else return {__bfloat16_as_ushort(__float2bfloat16_rn(v))};
}

// 16-bit storage: the same inputs (rounded to S) through the float CPU kernels and the S
// CUDA kernels; the GPU rounds every stored value, so the bound is S's precision.
template <typename S>
void run_case_16(int64_t B, int64_t T_, int64_t H, bool reset_after, CudaPath path, double tol,
                 unsigned seed) {
  emu::config().sms = 4;
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd;
  auto rnd = [&](int64_t n, double sc) {
    std::vector<float> v(n);
    for (auto& x : v) x = widen(narrow<S>(float(nd(gen) * sc)));
    return v;
  };
  auto to_s = [](const std::vector<float>& v) {
    std::vector<S> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = narrow<S>(v[i]);
    return o;
  };
  auto to_f = [](const std::vector<S>& v) {
    std::vector<float> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = widen(v[i]);
    return o;
  };
  auto xw = rnd(B * T_ * 3 * H, 1.0), h0 = rnd(B * H, 0.5),
       U = rnd(H * 3 * H, 1.0 / std::sqrt(double(H))), bias = rnd(3 * H, 0.3);
  const int64_t S_ = B * T_ * H;
  std::vector<float> hs(S_), hl(B * H), z(S_), r(S_), hc(S_), hu(S_);
  GruForwardParams<float> pc;
  pc.batch = B; pc.time = T_; pc.units = H; pc.reset_after = reset_after;
  pc.xw = xw.data(); pc.h0 = h0.data(); pc.recurrent_kernel = U.data(); pc.recurrent_bias = bias.data();
  pc.h_seq = hs.data(); pc.h_last = hl.data(); pc.update = z.data(); pc.reset = r.data();
  pc.candidate = hc.data(); pc.hu_candidate = reset_after ? hu.data() : nullptr;
  gru_forward_cpu(pc, SerialWorkers());
  auto xw_s = to_s(xw), h0_s = to_s(h0), U_s = to_s(U), b_s = to_s(bias);
  std::vector<S> ghs(S_, narrow<S>(NAN)), ghl(B * H, narrow<S>(NAN)), gz(S_, narrow<S>(NAN)),
      gr(S_, narrow<S>(NAN)), ghc(S_, narrow<S>(NAN)), ghu(S_, narrow<S>(NAN));
  GruForwardParams<S> pg;
  pg.batch = B; pg.time = T_; pg.units = H; pg.reset_after = reset_after;
  pg.xw = xw_s.data(); pg.h0 = h0_s.data(); pg.recurrent_kernel = U_s.data(); pg.recurrent_bias = b_s.data();
  pg.h_seq = ghs.data(); pg.h_last = ghl.data(); pg.update = gz.data(); pg.reset = gr.data();
  pg.candidate = ghc.data(); pg.hu_candidate = reset_after ? ghu.data() : nullptr;
  std::vector<unsigned char> ws(gru_forward_cuda_workspace(pg) + 1);
  int rc = gru_forward_cuda(pg, nullptr, ws.data(), ws.size() - 1, path);
  double e = rc ? INFINITY : std::max({maxdiff(hs, to_f(ghs)), maxdiff(hl, to_f(ghl)),
                                       maxdiff(z, to_f(gz)), maxdiff(r, to_f(gr)),
                                       maxdiff(hc, to_f(ghc))});
  // backward from the GPU forward's (rounded) outputs on both sides
  auto dhs = rnd(S_, 1.0);
  std::vector<float> fhs = to_f(ghs), fz = to_f(gz), fr = to_f(gr), fhc = to_f(ghc), fhu = to_f(ghu);
  std::vector<float> dxc(B * T_ * 3 * H), dh0c(B * H);
  GruBackwardParams<float> qc;
  qc.batch = B; qc.time = T_; qc.units = H; qc.reset_after = reset_after; qc.h0 = h0.data();
  qc.recurrent_kernel = U.data(); qc.h_seq = fhs.data(); qc.update = fz.data(); qc.reset = fr.data();
  qc.candidate = fhc.data(); qc.hu_candidate = reset_after ? fhu.data() : nullptr;
  qc.d_h_seq = dhs.data(); qc.d_h_last = dhs.data();  // any (B,H) values
  qc.d_xw = dxc.data(); qc.d_h0 = dh0c.data();
  gru_backward_cpu(qc, SerialWorkers());
  auto dhs_s = to_s(dhs);
  std::vector<S> dxg(B * T_ * 3 * H, narrow<S>(NAN)), dh0g(B * H, narrow<S>(NAN));
  GruBackwardParams<S> qg;
  qg.batch = B; qg.time = T_; qg.units = H; qg.reset_after = reset_after; qg.h0 = h0_s.data();
  qg.recurrent_kernel = U_s.data(); qg.h_seq = ghs.data(); qg.update = gz.data(); qg.reset = gr.data();
  qg.candidate = ghc.data(); qg.hu_candidate = reset_after ? ghu.data() : nullptr;
  qg.d_h_seq = dhs_s.data(); qg.d_h_last = dhs_s.data(); qg.d_xw = dxg.data(); qg.d_h0 = dh0g.data();
  std::vector<unsigned char> wsb(gru_backward_cuda_workspace(qg) + 1);
  const int rcb = gru_backward_cuda(qg, nullptr, wsb.data(), wsb.size() - 1, path);
  const double eb = rcb ? INFINITY : std::max(maxdiff(dxc, to_f(dxg)), maxdiff(dh0c, to_f(dh0g)));
  if (rcb) rc = rcb;
  const bool ok = e <= tol && eb <= 4 * tol;
  if (!ok) ++failures;
  std::printf("%s %s B=%ld T=%ld H=%ld ra=%d path=%d rc=%d fwd=%.2e bwd=%.2e (bound %.1e)\n",
              ok ? "ok  " : "FAIL", std::is_same_v<S, Half> ? "f16" : "bf16", (long)B, (long)T_,
              (long)H, reset_after, int(path), rc, e, eb, tol);
  std::fflush(stdout);
}

// A cooperative launch the runtime refuses (cudaErrorCooperativeLaunchTooLarge): the auto
// path falls back to the per-step kernels with the same results; a forced persistent path
// returns the error.
void refused_cooperative_launch(unsigned& seed) {
  emu::config().refuse_coop = true;
  for (bool ra : {true, false}) run_case<double>(5, 3, 11, ra, 1, 2, CudaPath::kAuto, true, true, seed++);
  GruForwardParams<double> p;
  std::vector<double> xw(2 * 2 * 9, 0.1), h0(2 * 3, 0.2), u(3 * 9, 0.3), b(9, 0.4), hs(2 * 2 * 3), hl(2 * 3);
  p.batch = 2; p.time = 2; p.units = 3; p.xw = xw.data(); p.h0 = h0.data(); p.recurrent_kernel = u.data();
  p.recurrent_bias = b.data(); p.h_seq = hs.data(); p.h_last = hl.data();
  std::vector<unsigned char> ws(gru_forward_cuda_workspace(p) + 1);
  const int rc = gru_forward_cuda(p, nullptr, ws.data(), ws.size() - 1, CudaPath::kPersistent);
  std::printf("%s forced persistent, launch refused: rc=%d\n", rc == 82 ? "ok  " : "FAIL", rc);
  if (rc != 82) ++failures;
  emu::config().refuse_coop = false;
}

// The persistent kernel splits the batch over the SMs its unit slices leave free.
void batch_split_plan() {
  emu::config().sms = 6;
  CudaLaunchPlan plan;
  int rc = gru_cuda_plan<double>(false, 40, 13, true, CudaPath::kPersistent, &plan);
  const bool ok = rc == 0 && plan.blocks_x == 2 && plan.blocks_y == 3 && plan.rows_per_block == 14;
  std::printf("%s persistent B=40 H=13 on 6 SMs: blocks %ldx%ld, %ld rows each\n", ok ? "ok  " : "FAIL",
              (long)plan.blocks_x, (long)plan.blocks_y, (long)plan.rows_per_block);
  if (!ok) ++failures;
  // the tuning override: forced shapes, batch chunks clamped to what fits at once
  auto& forced = gategru::cuda_launch::persistent_override();
  struct { int slice; int64_t y, want_x, want_y; } cases[] = {{8, 2, 2, 2}, {8, 5, 2, 3}, {4, 0, 4, 1}};
  for (auto c : cases) {
    forced.slice_width = c.slice;
    forced.blocks_y = c.y;
    rc = gru_cuda_plan<double>(false, 40, 13, true, CudaPath::kPersistent, &plan);
    const bool ok2 = rc == 0 && plan.blocks_x == c.want_x && plan.blocks_y == c.want_y;
    std::printf("%s override slice=%d y=%ld: blocks %ldx%ld\n", ok2 ? "ok  " : "FAIL", c.slice, (long)c.y,
                (long)plan.blocks_x, (long)plan.blocks_y);
    if (!ok2) ++failures;
  }
  forced.slice_width = 0;
  forced.blocks_y = 0;
}

int main(int argc, char** argv) {
  const bool quick = argc > 1;
  unsigned seed = 1;
  if (argc > 1 && std::string(argv[1]) == "tiny") {
    for (bool ra : {true, false})
      for (CudaPath path : {CudaPath::kPersistent, CudaPath::kPerStep})
        run_case<double>(5, 3, 11, ra, 1, 2, path, true, true, seed++);
    run_case<double>(5, 3, 11, true, 1, 2, CudaPath::kPersistent, true, false, seed++, 6);
    run_case<double>(5, 3, 11, false, 1, 4, CudaPath::kPersistent, true, true, seed++);  // grid.y = 2
    run_case_16<Half>(3, 4, 11, true, CudaPath::kPersistent, 3e-3, seed++);
    run_case_16<BFloat16>(3, 4, 11, false, CudaPath::kPerStep, 2.5e-2, seed++);
    refused_cooperative_launch(seed);
    batch_split_plan();
    std::printf("%d failures\n", failures);
    return failures != 0;
  }
  struct S { int64_t B, T, H; int sms; } shapes[] = {{1, 5, 20, 5}, {5, 6, 37, 5}, {40, 4, 37, 5}, {3, 0, 9, 3}, {2, 3, 1, 4}, {19, 3, 11, 2},
               {40, 4, 13, 6}, {5, 4, 13, 6}, {4, 3, 9, 5}};  // the last 3: batch over grid.y
  for (auto s : shapes)
    for (bool ra : {true, false})
      for (int mk : {0, 1})
        for (CudaPath path : {CudaPath::kPersistent, CudaPath::kPerStep}) {
          if (quick && (mk == 0 || s.B > 5)) continue;
          run_case<double>(s.B, s.T, s.H, ra, mk, s.sms, path, true, true, seed++);
        }
  // gates off, no gate gradients, float, auto path falling back (H > 8·SMs)
  run_case<double>(5, 4, 13, true, 1, 3, CudaPath::kAuto, false, false, seed++);
  run_case<double>(5, 4, 13, false, 1, 3, CudaPath::kAuto, true, false, seed++);
  run_case<float>(6, 5, 29, true, 1, 5, CudaPath::kPersistent, true, true, seed++);
  run_case<float>(6, 5, 29, false, 1, 5, CudaPath::kPerStep, true, true, seed++);
  run_case<double>(4, 3, 50, true, 1, 5, CudaPath::kAuto, true, true, seed++);   // 7 blocks > 5 SMs: step
  // the projecting form: x·W + b_in by the projection kernel, then the same sequence
  run_case<double>(5, 4, 13, true, 1, 3, CudaPath::kPersistent, true, false, seed++, 7);
  run_case<double>(3, 3, 10, false, 1, 3, CudaPath::kPerStep, true, false, seed++, 1);
  run_case<float>(6, 5, 29, true, 0, 5, CudaPath::kAuto, true, false, seed++, 9);
  // 16-bit storage, float compute
  for (bool ra : {true, false})
    for (CudaPath path : {CudaPath::kPersistent, CudaPath::kPerStep}) {
      run_case_16<Half>(5, 6, 21, ra, path, 3e-3, seed++);
      run_case_16<BFloat16>(5, 6, 21, ra, path, 2.5e-2, seed++);
    }
  refused_cooperative_launch(seed);
  {
    emu::config().sms = 5;
    CudaLaunchPlan plan;
    int rc = gru_cuda_plan<double>(false, 4, 50, true, CudaPath::kPersistent, &plan);
    std::printf("forced persistent with 7 blocks on 5 SMs: rc=%d reason=%s\n", rc, plan.reason.c_str());
    if (rc != 801) ++failures;
  }
  batch_split_plan();
  std::printf("%d failures\n", failures);
  return failures != 0;
}
