// Token + position embedding on CUDA (kernels/embedding.h): a thread per output value forward;
// backward, a block per wte row that occurs in the tokens (their positions grouped on the host)
// and a thread per position-channel of wpe, each summing in order (no atomics: deterministic).
#include "kernels/cuda_util.cuh"
#include "kernels/embedding.h"

namespace tessera::cuda {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreads;

// out (B·T, C); wte rows [vocab_start, vocab_start + rows); wpe (maxT, C) or null.
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte,
                                         const float* wpe, int64_t bt, int64_t t, int64_t c,
                                         int64_t vocab_start, int64_t rows) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < bt * c;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t pos = i / c, j = i % c;
    const int64_t row = tokens[pos] - vocab_start;
    float v = row >= 0 && row < rows ? wte[row * c + j] : 0.0f;
    if (wpe) v += wpe[(pos % t) * c + j];
    out[i] = v;
  }
}

// A block per group (one wte row that occurs in the tokens), threads over channels: the row's
// positions summed in order, then added once.
__global__ void embedding_backward_wte_kernel(float* dwte, const float* dout,
                                              const int32_t* group_rows, const int32_t* offsets,
                                              const int32_t* positions, int64_t c) {
  const int64_t g = blockIdx.x;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float acc = 0.0f;
    for (int32_t k = offsets[g]; k < offsets[g + 1]; ++k) acc += dout[positions[k] * c + j];
    dwte[group_rows[g] * c + j] += acc;
  }
}

// A thread per (position t, channel): dwpe[t] += Σ_b dout[b, t], b in order.
__global__ void embedding_backward_wpe_kernel(float* dwpe, const float* dout, int64_t b, int64_t t,
                                              int64_t c) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < t * c;
       i += int64_t{gridDim.x} * blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < b; ++s) acc += dout[s * t * c + i];
    dwpe[i] += acc;
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                       int64_t b, int64_t t, int64_t c, int64_t vocab_start, int64_t rows,
                       CudaStream stream) {
  if (b * t * c == 0) return;
  embedding_forward_kernel<<<blocks_for(b * t * c), kThreads, 0, stream>>>(
      out, tokens, wte, wpe, b * t, t, c, vocab_start, rows);
  TS_CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* group_rows,
                        const int32_t* offsets, const int32_t* positions, int64_t groups, int64_t b,
                        int64_t t, int64_t c, CudaStream stream) {
  if (b * t * c == 0) return;
  if (groups > 0) {
    embedding_backward_wte_kernel<<<static_cast<unsigned>(groups), kThreads, 0, stream>>>(
        dwte, dout, group_rows, offsets, positions, c);
    TS_CUDA_CHECK_LAUNCH();
  }
  if (dwpe) {
    embedding_backward_wpe_kernel<<<blocks_for(t * c), kThreads, 0, stream>>>(dwpe, dout, b, t, c);
    TS_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace tessera::cuda
