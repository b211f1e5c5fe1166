// AdamW and the gradient norm on CUDA (kernels/adamw.h): one grid-stride pass each; the norm's
// per-block float64 partials are summed on the host in block order (deterministic).
#include "kernels/adamw.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreads;
using cuda_detail::warp_sum;

// p = p·decay − step_size · m / (√v / bc2_sqrt + eps), with m, v updated from g·grad_scale.
__global__ void adamw_kernel(float* p, float* m, float* v, const float* g, int64_t n, float beta1,
                             float beta2, float eps, float grad_scale, float decay, float step_size,
                             float bc2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float gi = g[i] * grad_scale;
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

// partials[block] = Σ g² over the block's grid-stride share, in float64.
__global__ void norm_partials_kernel(double* partials, const float* g, int64_t n) {
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    acc += double{g[i]} * g[i];
  __shared__ double warps[kThreads / 32];
  acc = warp_sum(acc);
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) total += warps[w];
    partials[blockIdx.x] = total;
  }
}

}  // namespace

void adamw_update(float* params, float* m, float* v, const float* grads, int64_t n,
                  const AdamWStep& step, float step_size, float bc2_sqrt, CudaStream stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      params, m, v, grads, n, step.beta1, step.beta2, step.eps, step.grad_scale,
      1.0f - step.lr * step.weight_decay, step_size, bc2_sqrt);
  TS_CUDA_CHECK_LAUNCH();
}

void grad_norm_partials(double* partials, const float* grads, int64_t n, CudaStream stream) {
  norm_partials_kernel<<<kNormPartials, kThreads, 0, stream>>>(partials, grads, n);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
