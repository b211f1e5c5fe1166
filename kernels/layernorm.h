// LayerNorm over the last dimension, eps = 1e-5 (GPT-2's).
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

constexpr float kLayerNormEps = 1e-5f;

// out (N, C) = (inp - mean) * rstd * weight + bias; mean (N) and rstd (N) are saved for backward.
// Leading dimensions of inp/out are flattened into N.
void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias);

// dinp (N, C) = ∂L/∂inp; dweight (C) += Σ dout·x̂; dbias (C) += Σ dout.
void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd);

namespace cuda {  // launchers on device pointers (kernels/layernorm.cu); n rows of c
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t n, int64_t c, CudaStream stream);
// partials (2 · kLayerNormChunks · c) is scratch for the parameter gradients' column sums.
constexpr int kLayerNormChunks = 64;
void layernorm_backward(float* dinp, float* dweight, float* dbias, float* partials,
                        const float* dout, const float* inp, const float* weight, const float* mean,
                        const float* rstd, int64_t n, int64_t c, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
