// The CPU kernels for avx512 (compile flags set in CMakeLists.txt).
#define GATEGRU_ISA avx512
#include "gru_cpu_isa.inc"
