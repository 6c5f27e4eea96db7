// The CPU entry points: allocate the kernels' scratch memory, decide whether threads pay
// off, and run the kernels built for the best instruction set this CPU has.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu_isa.h"
#include "cpu_scratch.h"
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

struct WorkspaceSizes {
  int64_t batch, time, units, input_width;
  int row_buffers;
  bool dhu, products;
};

// The packed panels are written whole by the packing before any read, so not zeroed
// (at one step a call, zeroing cost as much as the step); the rest starts at 0.
template <typename T>
CpuWorkspace<T> carve_workspace(Carving& c, const WorkspaceSizes& n) {
  const int64_t padded = ceil_div(n.units, kUnitPadding) * kUnitPadding;
  CpuWorkspace<T> w;
  w.first_valid = c.take<int64_t>(n.batch);
  w.panels = c.take<T>(padded * 3 * n.units);
  w.input_panels = c.take<T>(padded * 3 * n.input_width);
  T** rows[] = {&w.rows_a, &w.rows_b, &w.rows_c};  // the first row_buffers
  for (int i = 0; i < n.row_buffers; ++i) *rows[i] = c.take_zeroed<T>(n.batch * n.units);
  w.dhu = n.dhu ? c.take_zeroed<T>(2 * n.batch * 3 * n.units) : nullptr;
  w.products = n.products ? c.take_zeroed<T>(2 * n.batch * product_row<T>(n.units)) : nullptr;
  return w;
}

template <typename T>
class OwnedWorkspace {
 public:
  OwnedWorkspace(const WorkspaceSizes& n, const bool* mask)
      : scratch_(bytes_for(n)) {
    Carving c(scratch_.data());
    view_ = carve_workspace<T>(c, n);
    find_first_valid(mask, n.batch, n.time, view_.first_valid);
  }
  const CpuWorkspace<T>& view() const { return view_; }

 private:
  static int64_t bytes_for(const WorkspaceSizes& n) {
    Carving c;
    carve_workspace<T>(c, n);
    return c.used();
  }

  Scratch scratch_;
  CpuWorkspace<T> view_;
};

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
  const OwnedWorkspace<T> ws({p.batch, p.time, p.units, p.kernel ? p.input_width : 0,
                              p.reset_after ? 0 : 3, false, may_stream_rows(p.batch, p.time)},
                             p.mask);
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
  const OwnedWorkspace<T> ws({p.batch, p.time, p.units, 0, 2, p.reset_after && !p.d_hu, false},
                             p.mask);
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
