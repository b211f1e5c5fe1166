// The language-model head fused with softmax cross-entropy: logits = x · wteᵀ (tied embedding),
// computed in row chunks so the full (N, V) logits never exist at once.
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include <functional>

#include "core/tensor.h"

namespace tessera {

// The vocabulary split over tensor-parallel ranks (Megatron's vocab-parallel cross-entropy): wte
// holds rows [start, start + V_local) of a vocabulary of `size` (0: wte's rows). For each chunk
// of rows the kernel hands its row maxima to all_reduce_max and its row sums of exp followed by
// its target logits (2 · rows values, 0 for targets outside the shard) to all_reduce_sum, so every
// rank computes the full softmax without the full logits; dx is then this rank's partial sum,
// which the caller all-reduces. The callbacks may be empty on one rank.
struct VocabShard {
  int64_t start = 0;
  int64_t size = 0;
  std::function<void(float* values, int64_t n)> all_reduce_max;
  std::function<void(float* values, int64_t n)> all_reduce_sum;
};

// losses (N) = −log softmax(x · wteᵀ)[target]; x (N, C), wte (V, C), targets (N) i32.
// Leading dimensions of x and targets are flattened into N. Throws Error on a target outside [0,
// V).
// `compute`: the type of the GEMMs' operands, as in matmul.h (f32, or bf16 / f16), and of the
// logits they make (a 16-bit type rounds them, as torch.autocast's linear does; the softmax and
// the losses are fp32).
void classifier_forward(Tensor& losses, const Tensor& x, const Tensor& wte, const Tensor& targets,
                        const VocabShard& shard = {}, DType compute = DType::f32);

// Forward and backward in one pass: losses (N) as above, then with
// dlogits = (softmax − onehot(target)) · dloss:  dx (N, C) = dlogits · wte;  dwte (V, C) +=
// dlogitsᵀ · x. dloss is ∂L/∂losses[i], the same for every row (1/N for a mean over N tokens).
void classifier_forward_backward(Tensor& losses, Tensor& dx, Tensor& dwte, const Tensor& x,
                                 const Tensor& wte, const Tensor& targets, float dloss,
                                 const VocabShard& shard = {}, DType compute = DType::f32);

// logits (N, V) = x (N, C) · wteᵀ, for sampling and inspection.
void logits_forward(Tensor& logits, const Tensor& x, const Tensor& wte);

namespace cuda {  // launchers on device pointers (kernels/classifier.cu)
// For each of `rows` rows of logits (rows, v) of type L (float, or the 16-bit type of the GEMMs
// that make it and read its gradient) holding vocabulary ids [vocab_start, vocab_start + v):
// losses[r] = logsumexp − logit of targets[r]; then the logits become dlogits = (softmax −
// onehot(target)) · dloss, in place. One rank's whole vocabulary (no tensor parallelism).
template <class L>
void softmax_xent(L* logits, float* losses, const int32_t* targets, int64_t rows, int64_t v,
                  int64_t vocab_start, float dloss, CudaStream stream);
// The losses alone.
template <class L>
void softmax_xent_forward(const L* logits, float* losses, const int32_t* targets, int64_t rows,
                          int64_t v, int64_t vocab_start, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
