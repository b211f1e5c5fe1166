// Residual connection y = x + f(x) and its conjugate.
// Activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out = a + b (same numel; out may be a or b). Its backward needs no op of its own: ∂L/∂b is dy,
// passed on without a copy, and dy joins the gradient of a in the layernorm backward before it
// (layernorm.h).
void residual_forward(Tensor& out, const Tensor& a, const Tensor& b);

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
