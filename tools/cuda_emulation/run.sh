#!/usr/bin/env bash
# Runs the CUDA kernels' source on host threads and compares gru_forward_cuda /
# gru_backward_cuda (both launch paths) with the CPU kernels, without a GPU.
#
# include/ holds a fake CUDA runtime: one host thread per GPU thread, std::barrier for
# __syncthreads() and grid.sync(), warp shuffles through memory, cooperative launches run
# every block at once. It checks index math, masks, phases and barrier placement (with
# `tsan`, races between threads; with `asan`, out-of-bounds accesses). It says nothing
# about the GPU's memory model, its speed, or code paths only the real runtime takes.
#
# usage: tools/cuda_emulation/run.sh BUILD_DIR [tiny|quick|full] [tsan|asan]
#   BUILD_DIR: a CMake build of gategru holding libgategru_core.a (the CPU reference), or
#   `-` to compile the CPU reference here from csrc/core (its portable kernels only)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="$1"
[ "$build" = - ] || build="$(cd "$build" && pwd)"
mode="${2:-tiny}"
san="${3:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
flags=(-std=c++20 -O1 -g -pthread -Wno-unknown-pragmas -I "$here/include" -I "$root/csrc/core" -I "$root/csrc")
case "$san" in
  tsan) flags+=(-fsanitize=thread) ;;
  asan) flags+=(-fsanitize=address,undefined) ;;
esac
# Shared memory must be per block, not per thread: the two declarations become pointers.
for f in gru_forward gru_backward; do
  sed -e 's/extern __shared__ __align__(16) unsigned char smem\[\];/unsigned char* smem = emu::dyn_smem();/' \
      -e 's/__shared__ __align__(16) unsigned char red_bytes\[\(.*\)\];/unsigned char* red_bytes = emu::static_smem(\1);/' \
      "$root/csrc/core/$f.cu" > "$work/$f.cc"
  grep -q "emu::" "$work/$f.cc" || { echo "shared-memory declarations changed in $f.cu: update run.sh" >&2; exit 1; }
done
g++ "${flags[@]}" -c "$work/gru_forward.cc" -o "$work/fwd.o" &
g++ "${flags[@]}" -c "$work/gru_backward.cc" -o "$work/bwd.o" &
g++ "${flags[@]}" -c "$here/compare_with_cpu.cc" -o "$work/cmp.o" &
g++ "${flags[@]}" -c "$here/plan_shim.cc" -o "$work/plan.o" &
reference=("$build/libgategru_core.a")
if [ "$build" = - ]; then
  reference=()
  for f in gru_cpu gru_cpu_baseline parallel shape_check; do
    g++ "${flags[@]}" -c "$root/csrc/core/$f.cc" -o "$work/ref_$f.o" &
  done
fi
wait
g++ "${flags[@]}" "$work"/*.o "${reference[@]}" -o "$work/compare"
args=()
[ "$mode" = full ] || args=("$mode")
"$work/compare" "${args[@]}"
