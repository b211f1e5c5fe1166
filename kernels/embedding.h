// Token + learned position embedding (GPT-2's input layer).
// Parameter gradients accumulate (+=).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out (B, T, C) = wte[tokens[b, t]] + wpe[t]; tokens (B, T) i32, wte (V, C), wpe (maxT, C).
// Vocabulary-parallel form: wte holds rows [vocab_start, vocab_start + V) of a vocabulary of
// vocab_size (0: V) and tokens outside them give zero rows; wpe may be undefined (no positions),
// so that the sum over ranks is the full embedding. Throws Error on a token outside
// [0, vocab_size) or T > maxT.
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe,
                       int64_t vocab_start = 0, int64_t vocab_size = 0);

// dwte (V, C) += Σ dout rows of each token (in the shard); dwpe (maxT, C) += Σ_b dout[b, t]
// (skipped when dwpe is undefined).
void embedding_backward(Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens,
                        int64_t vocab_start = 0, int64_t vocab_size = 0);

namespace cuda {  // launchers on device pointers (kernels/embedding.cu); tokens already checked,
                  // wte holds `rows` rows from vocab_start, wpe / dwpe may be null
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int64_t b, int64_t t, int64_t c, int64_t vocab_start, int64_t rows,
                       CudaStream stream);
// dwte rows group_rows[g] += Σ dout rows positions[offsets[g] .. offsets[g + 1]) (in that order);
// dwpe (T, C) += Σ_b dout[b, t] when dwpe is non-null.
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* group_rows,
                        const int32_t* offsets, const int32_t* positions, int64_t groups, int64_t b,
                        int64_t t, int64_t c, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
