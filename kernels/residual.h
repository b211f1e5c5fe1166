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

namespace cuda {  // launchers on device pointers (kernels/residual.cu)
// out (n) = a + b.
void add(float* out, const float* a, const float* b, int64_t n, CudaStream stream);
// x (rows, c) += bias (c) on every row.
void bias_add(float* x, const float* bias, int64_t rows, int64_t c, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
