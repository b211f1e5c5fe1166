// Launches of the tensor-core attention kernels (kernels/attention_tc.cuh) for one head size and
// one choice of each variant: shared memory opted into, grids sized, nothing checked but the
// shared memory (kernels/attention_tc.cu checks shapes and alignment, then takes the defaults;
// bench/attention_cuda.cu times the variants against each other).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/attention_tc.cuh"

namespace tessera::cuda {
namespace {

// Lets `kernel` use `bytes` of shared memory, or throws Error saying the head is too large for
// this GPU.
template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes, int hs) {
  const size_t limit = cuda_detail::smem_per_block_limit();
  TS_CHECK(bytes <= limit, "16-bit attention with head size ", hs, " needs ", bytes,
           " bytes of shared memory per block, this GPU has ", limit,
           ": use train.precision: fp32 or a smaller head");
  cuda_detail::allow_smem(kernel, bytes);
}

// grid (ceil(T / rows), B · NH) for blocks of `rows` rows.
dim3 grid_tc(int64_t b, int64_t t, int64_t nh, int rows) {
  return dim3(static_cast<unsigned>((t + rows - 1) / rows), static_cast<unsigned>(b * nh));
}

// The forward with M m-tiles (16 rows each) a warp.
template <int HS, int M, class T, class O>
void forward_tc(O* out, float* lse, const T* qkv, int64_t b, int64_t t, int64_t c, int64_t nh,
                CudaStream stream) {
  const size_t smem = (kForwardRows + 4 * kCols) * kLd<HS> * sizeof(T);
  allow_smem(forward_tc_kernel<HS, M, T, O>, smem, HS);
  forward_tc_kernel<HS, M, T, O>
      <<<grid_tc(b, t, nh, kForwardRows), 32 * kForwardWarps<M>, smem, stream>>>(
          out, lse, qkv, t, c, nh, 1.0f / std::sqrt(static_cast<float>(HS)));
  TS_CUDA_CHECK_LAUNCH();
}

// The backward: D, then dq in the dk/dv kernel (kDq; dq_accum and turns as
// attention_backward_tc takes them) or in the dq kernel of its own.
template <int HS, bool kDq, class T, class G>
void backward_tc(G* dqkv, float* delta, float* dq_accum, int* turns, const T* dout, const T* qkv,
                 const G* out, const float* lse, int64_t b, int64_t t, int64_t c, int64_t nh,
                 CudaStream stream) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const int64_t rows = b * t * nh,
                delta_blocks = (rows * HS / 8 + kDeltaThreads - 1) / kDeltaThreads;
  delta_tc_kernel<HS, T, G><<<static_cast<unsigned>(delta_blocks), kDeltaThreads, 0, stream>>>(
      delta, dout, out, rows, t, nh);
  TS_CUDA_CHECK_LAUNCH();
  constexpr int kRows = kBackwardRows, kThreads = 32 * kBackwardWarps;
  const size_t tiles = (2 * kRows + 4 * kCols) * kLd<HS> * sizeof(T);
  if constexpr (!kDq) {
    allow_smem(dq_tc_kernel<HS, T, G>, tiles, HS);
    dq_tc_kernel<HS, T, G><<<grid_tc(b, t, nh, kRows), kThreads, tiles, stream>>>(
        dqkv, dout, qkv, lse, delta, t, c, nh, scale);
    TS_CUDA_CHECK_LAUNCH();
  } else {
    TS_CUDA_CHECK(  // the turns and the ticket counter
        cudaMemsetAsync(turns, 0, attention_dq_turns(b, t, nh) * sizeof(int32_t), stream));
  }
  const size_t dkv_smem = tiles + 4 * kCols * sizeof(float) + (kDq ? kRows * kLdS * sizeof(T) : 0);
  allow_smem(dkv_tc_kernel<HS, T, G, kDq>, dkv_smem, HS);
  dkv_tc_kernel<HS, T, G, kDq><<<grid_tc(b, t, nh, kRows), kThreads, dkv_smem, stream>>>(
      dqkv, dq_accum, turns, dout, qkv, lse, delta, t, c, nh, scale);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace
}  // namespace tessera::cuda
