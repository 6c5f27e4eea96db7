// The CPU kernels for baseline (compile flags set in CMakeLists.txt).
#define GATEGRU_ISA baseline
#include "gru_cpu_isa.inc"
