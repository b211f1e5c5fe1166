// The language-model head fused with softmax cross-entropy: logits = x · wteᵀ (tied embedding),
// computed in row chunks so the full (N, V) logits never exist at once.
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// losses (N) = −log softmax(x · wteᵀ)[target]; x (N, C), wte (V, C), targets (N) i32.
// Leading dimensions of x and targets are flattened into N. Throws Error on a target outside [0,
// V).
void classifier_forward(Tensor& losses, const Tensor& x, const Tensor& wte, const Tensor& targets);

// Forward and backward in one pass: losses (N) as above, then with
// dlogits = (softmax − onehot(target)) · dloss:  dx (N, C) = dlogits · wte;  dwte (V, C) +=
// dlogitsᵀ · x. dloss is ∂L/∂losses[i], the same for every row (1/N for a mean over N tokens).
void classifier_forward_backward(Tensor& losses, Tensor& dx, Tensor& dwte, const Tensor& x,
                                 const Tensor& wte, const Tensor& targets, float dloss);

// logits (N, V) = x (N, C) · wteᵀ, for sampling and inspection.
void logits_forward(Tensor& logits, const Tensor& x, const Tensor& wte);

}  // namespace tessera
