// Shared pieces of the CUDA kernel files (included from .cu only): launch geometry, the launch
// check, warp and block reductions.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/cuda_check.h"

namespace tessera::cuda_detail {

constexpr int kThreads = 256;  // threads per block of the element-wise kernels

// Blocks for a grid-stride loop over n elements: enough to fill any current GPU, never more than
// the work needs.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t want = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(want, 1, 65535));
}

// Checks the launch just made (bad configuration, missing kernel image for this GPU).
#define TS_CUDA_CHECK_LAUNCH() TS_CUDA_CHECK(cudaGetLastError())

__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ inline double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// The sum (or max) of every thread's v in a block of kThreads threads, returned to all of them.
// Uses `scratch` (kThreads / 32 floats of shared memory); every thread of the block must call it.
template <bool kMax>
__device__ inline float block_reduce(float v, float* scratch) {
  v = kMax ? warp_max(v) : warp_sum(v);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) r = kMax ? fmaxf(r, scratch[w]) : r + scratch[w];
  __syncthreads();  // scratch may be reused by the next call
  return r;
}

}  // namespace tessera::cuda_detail
