// Softmax cross-entropy over a chunk of logits on CUDA (kernels/classifier.h); the GEMMs around
// it are cuda::gemm. A block per row: maximum, sum of exponentials, loss and, for backward, the
// logits turned into dlogits in place, as the CPU does (tiny probabilities flushed to zero).
#include <cfloat>

#include "kernels/classifier.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::block_reduce;
using cuda_detail::kThreads;

// logits (rows, v) for vocabulary ids [vocab_start, vocab_start + v); targets (rows) i32.
__global__ void softmax_xent_kernel(float* logits, float* losses, const int32_t* targets, int64_t v,
                                    int64_t vocab_start, float dloss, bool backward) {
  __shared__ float scratch[kThreads / 32];
  float* l = logits + blockIdx.x * v;
  float m = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) m = fmaxf(m, l[j]);
  m = block_reduce<true>(m, scratch);
  const int64_t target = targets[blockIdx.x] - vocab_start;
  const float target_logit = target >= 0 && target < v ? l[target] : 0.0f;
  __syncthreads();  // everyone has read the target logit before it is overwritten below
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) {
    const float e = expf(l[j] - m);
    l[j] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum, scratch);
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(sum) + m - target_logit;
  if (!backward) return;
  const float scale = dloss / sum;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) {
    const float g = l[j] * scale;
    l[j] = (fabsf(g) < FLT_MIN ? 0.0f : g) - (j == target ? dloss : 0.0f);
  }
}

}  // namespace

void softmax_xent(float* logits, float* losses, const int32_t* targets, int64_t rows, int64_t v,
                  int64_t vocab_start, float dloss, bool backward, CudaStream stream) {
  if (rows == 0) return;
  softmax_xent_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      logits, losses, targets, v, vocab_start, dloss, backward);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
