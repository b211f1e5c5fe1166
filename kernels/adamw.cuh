// AdamW and the gradient norm on CUDA (kernels/adamw.h): one grid-stride pass each; AdamW over up
// to kAdamWSetsPerLaunch tensors per launch (the norm likewise), their pointers in the kernel's
// parameters; the norm's per-block float64 partials are summed on the host in block order
// (deterministic).
//
// The kernels only: kernels/adamw.cu launches them (and the CPU emulation tests include them), so
// they stay in an unnamed namespace.
#pragma once

#include "kernels/adamw.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreads;
using cuda_detail::warp_sum;

// Up to kAdamWSetsPerLaunch sets and where each starts in their concatenation.
struct AdamWBatch {
  AdamWSet set[kAdamWSetsPerLaunch];
  int64_t start[kAdamWSetsPerLaunch + 1];
};

// Over the concatenated elements of the batch's sets: p = p·decay − step_size · m / (√v / bc2_sqrt
// + eps), with m, v updated from g·grad_scale. A thread's elements only increase, so the set it is
// in only moves forward.
__global__ void adamw_kernel(const __grid_constant__ AdamWBatch batch, int count, float beta1,
                             float beta2, float eps, float grad_scale, float step_size,
                             float bc2_sqrt) {
  int s = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < batch.start[count];
       i += int64_t{gridDim.x} * blockDim.x) {
    while (i >= batch.start[s + 1]) ++s;
    const AdamWSet& set = batch.set[s];
    const int64_t k = i - batch.start[s];
    const float gi = set.grads[k] * grad_scale;
    const float mi = beta1 * set.m[k] + (1.0f - beta1) * gi;
    const float vi = beta2 * set.v[k] + (1.0f - beta2) * gi * gi;
    set.m[k] = mi;
    set.v[k] = vi;
    set.params[k] = set.params[k] * set.decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

// Up to kAdamWSetsPerLaunch gradients of a norm.
struct NormBatch {
  const float* grads[kAdamWSetsPerLaunch];
  int64_t n[kAdamWSetsPerLaunch];
};

// partials[tensor blockIdx.y][block blockIdx.x] = Σ g² over the block's grid-stride share of that
// tensor, in float64.
__global__ void norm_partials_kernel(double* partials, const __grid_constant__ NormBatch batch) {
  const float* g = batch.grads[blockIdx.y];
  const int64_t n = batch.n[blockIdx.y];
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
    partials[int64_t{blockIdx.y} * gridDim.x + blockIdx.x] = total;
  }
}

}  // namespace
}  // namespace tessera::cuda
