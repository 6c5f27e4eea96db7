/* A stand-in libcuda.so.1 for tests: a driver that reports an old CUDA version
 * (FAKE_CUDA_DRIVER_VERSION, e.g. 12040 for 12.4). It exports only what the CUDA runtime
 * resolves before its version check, so the runtime fails exactly as it would on a real
 * machine whose driver is older than the toolkit gategru was built with. */
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
enum { CUDA_SUCCESS = 0, CUDA_ERROR_NOT_FOUND = 500 };

CUresult cuInit(unsigned flags) {
  (void)flags;
  return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* version) {
  const char* v = getenv("FAKE_CUDA_DRIVER_VERSION");
  *version = v ? atoi(v) : 12040;
  return CUDA_SUCCESS;
}

CUresult cuGetProcAddress_v2(const char* symbol, void** fn, int version,
                             unsigned long long flags, int* status);

CUresult cuGetProcAddress(const char* symbol, void** fn, int version, unsigned long long flags) {
  return cuGetProcAddress_v2(symbol, fn, version, flags, NULL);
}

/* The runtime asks for every entry point by name; only these three exist here. */
CUresult cuGetProcAddress_v2(const char* symbol, void** fn, int version,
                             unsigned long long flags, int* status) {
  (void)flags;
  *fn = NULL;
  if (strcmp(symbol, "cuInit") == 0) *fn = (void*)cuInit;
  if (strcmp(symbol, "cuDriverGetVersion") == 0) *fn = (void*)cuDriverGetVersion;
  if (strcmp(symbol, "cuGetProcAddress") == 0)
    *fn = version >= 12000 ? (void*)cuGetProcAddress_v2 : (void*)cuGetProcAddress;
  if (status) *status = *fn ? 0 : 1; /* CU_GET_PROC_ADDRESS_SUCCESS / SYMBOL_NOT_FOUND */
  return *fn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
