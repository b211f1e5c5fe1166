// GELU, tanh approximation (GPT-2's): gelu(x) = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
// Activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out (N) = gelu(inp (N)); any shape, same numel. out is f32, or bf16 / f16 (rounded to nearest
// even) when only 16-bit GEMMs read it; inp is f32 or of out's type.
void gelu_forward(Tensor& out, const Tensor& inp);
// dinp (N) = gelu'(inp) · dout. dinp is f32 (it may be dout itself), or bf16 / f16 when only
// 16-bit GEMMs read it; inp is f32 or of dinp's type (a pre-activation stored in 16 bits).
void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp);

namespace cuda {  // launchers on device pointers (kernels/gelu.cu); the functions above call them
// Y, D: float, bf16 or f16; X: float or the same type.
template <class Y, class X>
void gelu_forward(Y* out, const X* inp, int64_t n, CudaStream stream);
template <class D, class X>
void gelu_backward(D* dinp, const float* dout, const X* inp, int64_t n, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
