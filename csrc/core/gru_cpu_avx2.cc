// The CPU kernels for avx2 (compile flags set in CMakeLists.txt).
#define GATEGRU_ISA avx2
#include "gru_cpu_isa.inc"
