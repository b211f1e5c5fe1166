// Token + learned position embedding (GPT-2's input layer).
// Parameter gradients accumulate (+=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out (B, T, C) = wte[tokens[b, t]] + wpe[t]; tokens (B, T) i32, wte (V, C), wpe (maxT, C).
// Throws Error on a token outside [0, V) or T > maxT.
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe);

// dwte (V, C) += Σ dout rows of each token; dwpe (maxT, C) += Σ_b dout[b, t].
void embedding_backward(Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens);

}  // namespace tessera
