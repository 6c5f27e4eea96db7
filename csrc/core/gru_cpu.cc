// The CPU entry points: allocate the kernels' scratch memory, decide whether threads pay
// off, and run the kernels built for the best instruction set this CPU has.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu_isa.h"
#include "gru_cpu.h"
#include "sequence_layout.h"

namespace gategru {
namespace {

constexpr int64_t kUnitPadding = 32;  // panels are padded for the widest unit block (32 floats)

CpuIsa best_cpu_isa() {
#if defined(__x86_64__) && defined(GATEGRU_HAVE_AVX512)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return CpuIsa::avx512;
#endif
#if defined(__x86_64__) && defined(GATEGRU_HAVE_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::avx2;
#endif
  return CpuIsa::baseline;
}

// The packed panels: written whole by the packing before any read, so not zeroed first
// (at one step a call, zeroing cost as much as the step), and on cache lines, so that a
// 64-byte vector load is one line, not two.
template <typename T>
class PanelBuffer {
 public:
  void resize(int64_t n) {
    if (n > 0) data_.reset(static_cast<T*>(::operator new[](n * sizeof(T), kLine)));
  }
  T* data() const { return data_.get(); }

 private:
  static constexpr std::align_val_t kLine{64};
  struct Free {
    void operator()(T* p) const { ::operator delete[](p, kLine); }
  };
  std::unique_ptr<T[], Free> data_;
};

template <typename T>
struct OwnedWorkspace {
  std::vector<int64_t> first_valid;
  PanelBuffer<T> panels, input_panels;
  std::vector<T> rows_a, rows_b, rows_c, dhu, products;
  CpuWorkspace<T> view() {
    return {first_valid.data(), panels.data(), input_panels.data(), rows_a.data(),
            rows_b.data(),      rows_c.data(), dhu.data(),          products.data()};
  }
};

template <typename T>
OwnedWorkspace<T> make_workspace(int64_t batch, int64_t time, int64_t units, const bool* mask,
                                 int row_buffers, bool dhu, int64_t input_width = 0) {
  OwnedWorkspace<T> w;
  w.first_valid.resize(batch);
  find_first_valid(mask, batch, time, w.first_valid.data());
  w.panels.resize(ceil_div(units, kUnitPadding) * kUnitPadding * 3 * units);
  w.input_panels.resize(ceil_div(units, kUnitPadding) * kUnitPadding * 3 * input_width);
  std::vector<T>* rows[] = {&w.rows_a, &w.rows_b, &w.rows_c};  // the first row_buffers
  for (int i = 0; i < row_buffers; ++i) rows[i]->resize(batch * units);
  if (dhu) w.dhu.resize(2 * batch * 3 * units);
  return w;
}

// Large outputs are often fresh memory from the OS (numpy's, or TensorFlow's allocator
// with oneDNN off), faulted in by the kernels' first writes. On 4 KB pages an S3 forward
// with gates took 52,000-65,000 faults and 80-90 ms of its 250; asking for 2 MB pages
// (where transparent huge pages are "madvise", as on Ubuntu) cut that to a few hundred.
// Advice only, for the output's whole 2 MB pages; memory already in use is unaffected.
void advise_huge_pages(const void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (!data || bytes < static_cast<int64_t>(2 * kHuge)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

template <typename T>
void advise_outputs(int64_t elements, std::initializer_list<T*> outputs) {
  for (T* out : outputs) advise_huge_pages(out, elements * static_cast<int64_t>(sizeof(T)));
}

const Workers& pick_workers(int64_t batch, int64_t units, const Workers& pool) {
  static const SerialWorkers serial;
  return worth_threads(batch, units) ? pool : serial;
}

}  // namespace

CpuIsa selected_cpu_isa() {
  const CpuIsa best = best_cpu_isa();
  const char* env = std::getenv("GATEGRU_CPU_ISA");
  if (!env) return best;
  CpuIsa wanted = best;
  if (std::strcmp(env, "baseline") == 0) wanted = CpuIsa::baseline;
  if (std::strcmp(env, "avx2") == 0) wanted = CpuIsa::avx2;
  return wanted < best ? wanted : best;  // never one the CPU lacks
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512:
      return "avx512";
    case CpuIsa::avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

template <typename T>
void gru_forward_cpu(const GruForwardParams<T>& p, const Workers& workers) {
  if (p.batch == 0 || p.units == 0) return;
  auto ws = make_workspace<T>(p.batch, p.time, p.units, p.mask, p.reset_after ? 0 : 3, false,
                              p.kernel ? p.input_width : 0);
  if (may_stream_rows(p.batch, p.time)) ws.products.resize(2 * p.batch * 3 * p.units);
  advise_outputs<T>(p.batch * p.time * p.units,
                    {p.h_seq, p.update, p.reset, p.candidate, p.hu_candidate});
  const Workers& w = pick_workers(p.batch, p.units, workers);
  switch (selected_cpu_isa()) {
#if defined(GATEGRU_HAVE_AVX512)
    case CpuIsa::avx512:
      return avx512::forward(p, ws.view(), w);
#endif
#if defined(GATEGRU_HAVE_AVX2)
    case CpuIsa::avx2:
      return avx2::forward(p, ws.view(), w);
#endif
    default:
      return baseline::forward(p, ws.view(), w);
  }
}

template <typename T>
void gru_backward_cpu(const GruBackwardParams<T>& p, const Workers& workers) {
  if (p.batch == 0 || p.units == 0) return;
  auto ws = make_workspace<T>(p.batch, p.time, p.units, p.mask, 2, p.reset_after && !p.d_hu);
  advise_outputs<T>(p.batch * p.time * 3 * p.units, {p.d_xw, p.d_hu});
  const Workers& w = pick_workers(p.batch, p.units, workers);
  switch (selected_cpu_isa()) {
#if defined(GATEGRU_HAVE_AVX512)
    case CpuIsa::avx512:
      return avx512::backward(p, ws.view(), w);
#endif
#if defined(GATEGRU_HAVE_AVX2)
    case CpuIsa::avx2:
      return avx2::backward(p, ws.view(), w);
#endif
    default:
      return baseline::backward(p, ws.view(), w);
  }
}

template void gru_forward_cpu<float>(const GruForwardParams<float>&, const Workers&);
template void gru_forward_cpu<double>(const GruForwardParams<double>&, const Workers&);
template void gru_backward_cpu<float>(const GruBackwardParams<float>&, const Workers&);
template void gru_backward_cpu<double>(const GruBackwardParams<double>&, const Workers&);

}  // namespace gategru
