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

}  // namespace tessera
