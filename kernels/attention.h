// Causal multi-head self-attention, fused and tiled like FlashAttention-2: scores are computed a
// (query block × key block) tile at a time with an online softmax, so no T×T matrix per head is
// ever held; backward recomputes the tiles from the saved log-sum-exp. `compute` is the type the
// products' operands are rounded to: f32 (exact), or bf16 or f16 on CUDA (tensor cores, fp32
// accumulation and softmax; every tensor passed in or out stays f32).
// Activation gradients overwrite (=).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace tessera {

// qkv (B, T, 3C) packs q, k, v along the last dimension (GPT-2's c_attn output); head h uses
// columns [h·hs, (h+1)·hs) of each, hs = C / num_heads. out (B, T, C) = softmax(q·kᵀ/√hs + causal
// mask)·v with heads side by side; lse (B, NH, T) keeps each row's log-sum-exp for backward.
// out may be bf16 or f16 (rounded to nearest even) with 16-bit `compute`: only GEMMs read it.
void attention_forward(Tensor& out, Tensor& lse, const Tensor& qkv, int64_t num_heads,
                       DType compute = DType::f32);

// dqkv (B, T, 3C) = ∂L/∂qkv given dout (B, T, C) and forward's qkv, out and lse. dqkv has out's
// type (f32, or the 16-bit compute type when only GEMMs read them). On the CPU,
// 16-bit `compute` rounds what the tensor-core kernels round (q, k, v, dout, P, dS): the
// reference the CUDA path is tested against.
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
// delta (B, NH, T) = Σ over each head's columns of dout ∘ out: softmax backward's row term.
// O: out's type, float, bf16 or f16.
template <class O>
void attention_delta(float* delta, const float* dout, const O* out, int64_t b, int64_t t, int64_t c,
                     int64_t nh, CudaStream stream);
// The same products with bf16 or f16 operands on the tensor cores (kernels/attention_tc.cu); head
// size 16, 32, 64 or 128. Throws Error for another compute type or head size, or when the GPU has
// too little shared memory per block for the head size. O: out's type, float, bf16 or f16.
template <class O>
void attention_forward_tc(O* out, float* lse, const float* qkv, int64_t b, int64_t t, int64_t c,
                          int64_t nh, DType compute, CudaStream stream);
template <class O>  // dqkv of out's type
void attention_backward_tc(O* dqkv, float* delta, const float* dout, const float* qkv, const O* out,
                           const float* lse, int64_t b, int64_t t, int64_t c, int64_t nh,
                           DType compute, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
