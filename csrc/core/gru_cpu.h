// CPU GRU sequence kernels: the whole sequence in one call, gates written in the same pass.
#pragma once
#include "gru_params.h"
#include "parallel.h"

namespace gategru {

template <typename T>
void gru_forward_cpu(const GruForwardParams<T>& p, const Workers& workers);

template <typename T>
void gru_backward_cpu(const GruBackwardParams<T>& p, const Workers& workers);

}  // namespace gategru
