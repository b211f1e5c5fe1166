// Residual connection y = x + f(x) and its conjugate.
// Activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out = a + b (same numel).
void residual_forward(Tensor& out, const Tensor& a, const Tensor& b);
// For y = x + f(x): dx = dy + d_branch, where d_branch is ∂L/∂x through f. (∂L/∂f(x) is dy
// itself, so the caller passes dy on to f's backward without a copy.)
void residual_backward(Tensor& dx, const Tensor& dy, const Tensor& d_branch);

// x (N, C) += bias (C) on every row: a row-parallel layer's bias under sequence parallelism,
// added after the reduce-scatter. (Its gradient, Σ over rows of dout, comes from matmul_backward.)
void bias_add(Tensor& x, const Tensor& bias);

}  // namespace tessera
