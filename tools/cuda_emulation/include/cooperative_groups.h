#pragma once
#include "cuda_runtime.h"
namespace cooperative_groups {
struct grid_group { void sync() { emu::tl->grid->arrive_and_wait(); } };
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups
