// Fake CUDA runtime for running the kernels' source on host threads (tools/cuda_emulation).
#pragma once
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3 { unsigned x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorNotSupported = 801,
                   cudaErrorCooperativeLaunchTooLarge = 82 };
enum cudaMemcpyKind { cudaMemcpyDeviceToDevice = 3 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrCooperativeLaunch = 95,
                      cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace emu {
// refuse_coop: cooperative launches fail as when fewer blocks fit than the occupancy query said.
struct Config { int sms = 5; int coop = 1; int optin = 232448; int per_sm = 1; bool refuse_coop = false; long launches = 0; long coop_launches = 0; };
inline Config& config() { static Config c; return c; }
struct Warp { std::barrier<> bar{32}; alignas(16) unsigned char buf[32][8]; };
struct Block {
  explicit Block(unsigned n, size_t smem) : bar(n), warps(n / 32), dyn(smem + 16), stat(1 << 16) {}
  std::barrier<> bar;
  std::vector<Warp> warps;
  std::vector<unsigned char> dyn, stat;
};
struct Ctx { uint3 tid, bid; dim3 bdim, gdim; Block* block; std::barrier<>* grid; };
inline thread_local Ctx* tl = nullptr;
inline unsigned char* align16(unsigned char* p) { return reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(p) + 15) & ~uintptr_t(15)); }
inline unsigned char* dyn_smem() { return align16(tl->block->dyn.data()); }
inline unsigned char* static_smem(size_t) { return align16(tl->block->stat.data()); }

template <class F>
void run(dim3 g, dim3 b, size_t smem, bool coop, F body) {
  const unsigned nthreads = b.x, nblocks = g.x * g.y;
  auto run_blocks = [&](unsigned first, unsigned count, std::barrier<>* grid) {
    std::vector<std::unique_ptr<Block>> blocks;
    for (unsigned i = 0; i < count; ++i) blocks.push_back(std::make_unique<Block>(nthreads, smem));
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < count; ++i)
      for (unsigned t = 0; t < nthreads; ++t)
        threads.emplace_back([&, i, t] {
          const unsigned bi = first + i;
          Ctx c{{t, 0, 0}, {bi % g.x, bi / g.x, 0}, b, g, blocks[i].get(), grid};
          tl = &c;
          body();
          tl = nullptr;
        });
    for (auto& th : threads) th.join();
  };
  if (coop) {
    std::barrier<> grid(static_cast<std::ptrdiff_t>(nthreads) * nblocks);
    run_blocks(0, nblocks, &grid);
  } else {
    for (unsigned i = 0; i < nblocks; ++i) run_blocks(i, 1, nullptr);
  }
}

template <class... A, size_t... I>
std::tuple<A...> unpack(void** args, std::index_sequence<I...>) { return std::tuple<A...>(*static_cast<A*>(args[I])...); }
}  // namespace emu

#define threadIdx (emu::tl->tid)
#define blockIdx (emu::tl->bid)
#define blockDim (emu::tl->bdim)
#define gridDim (emu::tl->gdim)

inline void __syncthreads() { emu::tl->block->bar.arrive_and_wait(); }
template <class T> T __ldcg(const T* p) { return *p; }
template <class T> T __ldg(const T* p) { return *p; }
template <class T> T __shfl_xor_sync(unsigned, T v, int m) {
  emu::Warp& w = emu::tl->block->warps[emu::tl->tid.x / 32];
  const unsigned lane = emu::tl->tid.x % 32;
  std::memcpy(w.buf[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T r;
  std::memcpy(&r, w.buf[lane ^ m], sizeof(T));
  w.bar.arrive_and_wait();
  return r;
}
inline long min(long a, long b) { return a < b ? a : b; }

inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  auto& c = emu::config();
  *v = a == cudaDevAttrMultiProcessorCount ? c.sms : a == cudaDevAttrCooperativeLaunch ? c.coop : c.optin;
  return cudaSuccess;
}
inline cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
struct cudaFuncAttributes { size_t sharedSizeBytes = 0; };  // emulated kernels: no static smem
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void*) { *a = {}; return cudaSuccess; }
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int, size_t) { *n = emu::config().per_sm; return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
template <class... A>
cudaError_t cudaLaunchKernel(void (*f)(A...), dim3 g, dim3 b, void** args, size_t smem, cudaStream_t) {
  auto tup = emu::unpack<A...>(args, std::index_sequence_for<A...>{});
  emu::config().launches++;
  emu::run(g, b, smem, false, [&] { std::apply(f, tup); });
  return cudaSuccess;
}
template <class... A>
cudaError_t cudaLaunchCooperativeKernel(void (*f)(A...), dim3 g, dim3 b, void** args, size_t smem, cudaStream_t) {
  if (emu::config().refuse_coop) return cudaErrorCooperativeLaunchTooLarge;
  auto tup = emu::unpack<A...>(args, std::index_sequence_for<A...>{});
  emu::config().coop_launches++;
  emu::run(g, b, smem, true, [&] { std::apply(f, tup); });
  return cudaSuccess;
}
