// Softmax cross-entropy over a chunk of logits on CUDA (kernels/classifier.h); the GEMMs around
// it are cuda::gemm. A block per row, three reads of the row: its maximum, the sum of
// exponentials (the CPU's formula), then for backward each exponential again, scaled into dlogits
// (tiny probabilities flushed to zero as on the CPU), written in the type the GEMMs after it read.
#include <cfloat>

#include "kernels/classifier.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::block_reduce;
using cuda_detail::kThreads;

// logits (rows, v) for vocabulary ids [vocab_start, vocab_start + v); targets (rows) i32; dlogits
// (rows, v) of type G, or null for the loss alone. dlogits may alias logits when G is float: each
// element is read for the last time just before it is written.
template <class G>
__global__ void softmax_xent_kernel(const float* logits, float* losses, G* dlogits,
                                    const int32_t* targets, int64_t v, int64_t vocab_start,
                                    float dloss) {
  __shared__ float scratch[kThreads / 32];
  const float* l = logits + blockIdx.x * v;
  float m = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) m = fmaxf(m, l[j]);
  m = block_reduce<true>(m, scratch);
  const int64_t target = targets[blockIdx.x] - vocab_start;
  const float target_logit = target >= 0 && target < v ? l[target] : 0.0f;
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) sum += expf(l[j] - m);
  sum = block_reduce<false>(sum, scratch);  // its barriers: target_logit is read by everyone
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(sum) + m - target_logit;
  if (dlogits == nullptr) return;
  const float scale = dloss / sum;
  G* dl = dlogits + blockIdx.x * v;
  for (int64_t j = threadIdx.x; j < v; j += kThreads) {
    const float g = expf(l[j] - m) * scale;
    cuda_detail::store(dl[j], (fabsf(g) < FLT_MIN ? 0.0f : g) - (j == target ? dloss : 0.0f));
  }
}

}  // namespace

template <class G>
void softmax_xent(const float* logits, float* losses, G* dlogits, const int32_t* targets,
                  int64_t rows, int64_t v, int64_t vocab_start, float dloss, CudaStream stream) {
  if (rows == 0) return;
  softmax_xent_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      logits, losses, cuda_detail::cuda_ptr(dlogits), targets, v, vocab_start, dloss);
  TS_CUDA_CHECK_LAUNCH();
}
template void softmax_xent(const float*, float*, float*, const int32_t*, int64_t, int64_t, int64_t,
                           float, CudaStream);
template void softmax_xent(const float*, float*, bf16*, const int32_t*, int64_t, int64_t, int64_t,
                           float, CudaStream);
template void softmax_xent(const float*, float*, f16*, const int32_t*, int64_t, int64_t, int64_t,
                           float, CudaStream);

void softmax_xent_forward(const float* logits, float* losses, const int32_t* targets, int64_t rows,
                          int64_t v, int64_t vocab_start, CudaStream stream) {
  softmax_xent<float>(logits, losses, nullptr, targets, rows, v, vocab_start, 0.0f, stream);
}

}  // namespace tessera::cuda
