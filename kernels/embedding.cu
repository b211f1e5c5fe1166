// Token + position embedding on CUDA (kernels/embedding.h): a thread per output value forward; a
// thread per channel backward, walking the positions in order (no atomics: deterministic).
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

__global__ void embedding_backward_kernel(float* dwte, float* dwpe, const float* dout,
                                          const int32_t* tokens, int64_t bt, int64_t t, int64_t c,
                                          int64_t vocab_start, int64_t rows) {
  const int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (j >= c) return;
  for (int64_t pos = 0; pos < bt; ++pos) {
    const float dy = dout[pos * c + j];
    const int64_t row = tokens[pos] - vocab_start;
    if (row >= 0 && row < rows) dwte[row * c + j] += dy;
    if (dwpe) dwpe[(pos % t) * c + j] += dy;
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

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens,
                        int64_t b, int64_t t, int64_t c, int64_t vocab_start, int64_t rows,
                        CudaStream stream) {
  if (b * t * c == 0) return;
  embedding_backward_kernel<<<static_cast<unsigned>((c + kThreads - 1) / kThreads), kThreads, 0,
                              stream>>>(dwte, dwpe, dout, tokens, b * t, t, c, vocab_start, rows);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
