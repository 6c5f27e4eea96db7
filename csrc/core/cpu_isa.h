// Entry points of the CPU kernels, compiled once per instruction set (gru_cpu_<isa>.cc),
// and the runtime choice between them (gru_cpu.cc).
#pragma once
#include "cpu_workspace.h"
#include "gru_params.h"
#include "parallel.h"

namespace gategru {

enum class CpuIsa { baseline, avx2, avx512 };

// The best instruction set this CPU and build support; GATEGRU_CPU_ISA=baseline|avx2|avx512
// asks for a lower one (tests use it to cover every path on one machine).
CpuIsa selected_cpu_isa();
const char* cpu_isa_name(CpuIsa isa);

#define GATEGRU_DECLARE_ISA(NS)                                                            \
  namespace NS {                                                                          \
  void forward(const GruForwardParams<float>&, const CpuWorkspace<float>&, const Workers&); \
  void forward(const GruForwardParams<double>&, const CpuWorkspace<double>&,               \
               const Workers&);                                                            \
  void backward(const GruBackwardParams<float>&, const CpuWorkspace<float>&,               \
                const Workers&);                                                           \
  void backward(const GruBackwardParams<double>&, const CpuWorkspace<double>&,             \
                const Workers&);                                                           \
  }
GATEGRU_DECLARE_ISA(baseline)
GATEGRU_DECLARE_ISA(avx2)
GATEGRU_DECLARE_ISA(avx512)
#undef GATEGRU_DECLARE_ISA

}  // namespace gategru
