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

}  // namespace tessera
