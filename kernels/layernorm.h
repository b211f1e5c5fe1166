// LayerNorm over the last dimension, eps = 1e-5 (GPT-2's).
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

constexpr float kLayerNormEps = 1e-5f;

// out (N, C) = (inp - mean) * rstd * weight + bias; mean (N) and rstd (N) are saved for backward.
// Leading dimensions of inp/out are flattened into N. out is f32, or bf16 / f16 (rounded to
// nearest even) when only 16-bit GEMMs read it.
void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias);

// The residual add fused with the layernorm after it: res (N, C) = a + b, then out, mean and rstd
// = layernorm_forward of res (bit for bit on the CPU), in one pass over the rows. out (f32, bf16 or
// f16) may alias b.
void residual_layernorm_forward(Tensor& res, Tensor& out, Tensor& mean, Tensor& rstd,
                                const Tensor& a, const Tensor& b, const Tensor& weight,
                                const Tensor& bias);

// dinp (N, C) = ∂L/∂inp; dweight (C) += Σ dout·x̂; dbias (C) += Σ dout. With `dresidual` (N, C)
// given, dinp = dresidual + ∂L/∂inp: the residual stream's gradient joins the branch's in the same
// pass (bit for bit the separate add of dresidual and dinp). dinp may alias dresidual. With
// `rounded` given ((N, C), bf16 or f16), dinp is also written there rounded to its type in the
// same pass: the copy the 16-bit GEMMs after it read (instead of each rounding dinp again).
void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dresidual = Tensor(),
                        Tensor* rounded = nullptr);

namespace cuda {  // launchers on device pointers (kernels/layernorm.cu); n rows of c
// With `b` non-null, the row is a + b (stored to res) before it is normalized: the fused residual;
// with b null, inp is normalized as it is (res unused). Y: float, bf16 or f16.
template <class Y>
void layernorm_forward(Y* out, float* mean, float* rstd, float* res, const float* inp,
                       const float* b, const float* weight, const float* bias, int64_t n, int64_t c,
                       CudaStream stream);
// partials (2 · kLayerNormChunks · c) is scratch for the parameter gradients' column sums: one
// row of sums per chunk of rows, 1024 chunks so that the one-pass backward fills the GPU (256 ran
// a GPT-2 124M layernorm at a quarter of the warps an H100 holds).
constexpr int kLayerNormChunks = 1024;
// dresidual: null, or added into dinp. rounded: null, or dinp's copy in H (bf16 or f16; float
// when null).
template <class H>
void layernorm_backward(float* dinp, H* rounded, float* dweight, float* dbias, float* partials,
                        const float* dout, const float* inp, const float* weight, const float* mean,
                        const float* rstd, const float* dresidual, int64_t n, int64_t c,
                        CudaStream stream);
}  // namespace cuda

}  // namespace tessera
