// Causal multi-head self-attention, fused and tiled like FlashAttention-2: scores are computed a
// (query block × key block) tile at a time with an online softmax, so no T×T matrix per head is
// ever held; backward recomputes the tiles from the saved log-sum-exp. `compute` is the type the
// products' operands are rounded to: f32 (exact), or bf16 or f16 (on CUDA the tensor cores, fp32
// accumulation and softmax). qkv, out, dout and dqkv are f32, or of that 16-bit type when only
// ops that round to it read them; lse is f32.
// Activation gradients overwrite (=).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tessera {

// qkv (B, T, 3C) packs q, k, v along the last dimension (GPT-2's c_attn output); head h uses
// columns [h·hs, (h+1)·hs) of each, hs = C / num_heads. out (B, T, C) = softmax(q·kᵀ/√hs + causal
// mask)·v with heads side by side; lse (B, NH, T) keeps each row's log-sum-exp for backward.
// out may be bf16 or f16 (rounded to nearest even) with 16-bit `compute`: only GEMMs read it; so
// may qkv (rounded once when f32).
void attention_forward(Tensor& out, Tensor& lse, const Tensor& qkv, int64_t num_heads,
                       DType compute = DType::f32);

// dqkv (B, T, 3C) = ∂L/∂qkv given dout (B, T, C) and forward's qkv, out and lse. dqkv has out's
// type (f32, or the 16-bit compute type when only GEMMs read them); dout is f32 or of the compute
// type. On the CPU, 16-bit `compute` rounds what the tensor-core kernels round (q, k, v, dout, P,
// dS; D = rowsum(dout ∘ out) from the rounded dout): the reference the CUDA path is tested against.
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& lse, int64_t num_heads, DType compute = DType::f32);

namespace cuda {  // launchers on device pointers; head size ≤ 128
// fp32 on the CUDA cores (kernels/attention.cu).
void attention_forward(float* out, float* lse, const float* qkv, int64_t b, int64_t t, int64_t c,
                       int64_t nh, CudaStream stream);
// delta (B, NH, T) is scratch.
void attention_backward(float* dqkv, float* delta, const float* dout, const float* qkv,
                        const float* out, const float* lse, int64_t b, int64_t t, int64_t c,
                        int64_t nh, CudaStream stream);
// The same products on the tensor cores (kernels/attention_tc.cu): T, bf16 or f16, is the
// products' type and qkv's and dout's; O, out's and dqkv's, is float or T. Head size 16, 32, 64 or
// 128; qkv, dout and out 16-byte aligned. Throws Error for another head size, or when the GPU has
// too little shared memory per block for the head size.
template <class O, class T>
void attention_forward_tc(O* out, float* lse, const T* qkv, int64_t b, int64_t t, int64_t c,
                          int64_t nh, CudaStream stream);
// delta (B, NH, T), dq_accum (B, T, C) and turns (attention_dq_turns of them) are scratch; the
// last two are used only where attention_dq_in_dkv (may be null elsewhere).
template <class O, class T>
void attention_backward_tc(O* dqkv, float* delta, float* dq_accum, int32_t* turns, const T* dout,
                           const T* qkv, const O* out, const float* lse, int64_t b, int64_t t,
                           int64_t c, int64_t nh, CudaStream stream);
// Whether attention_backward_tc makes dq in its dk/dv kernel at head size hs, each key tile adding
// its share in turn (five products instead of seven): up to 64, where its registers allow it.
constexpr bool attention_dq_in_dkv(int64_t hs) {
  return hs <= 64;
}
// The int32 count of attention_backward_tc's turns: one per (batch, head, 64-query tile), and a
// ticket counter.
inline int64_t attention_dq_turns(int64_t b, int64_t t, int64_t nh) {
  return b * nh * ((t + 63) / 64) + 1;
}
}  // namespace cuda

}  // namespace tessera
