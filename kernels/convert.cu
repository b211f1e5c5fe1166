// f32 <-> bf16 / f16 on CUDA (kernels/convert.h): the same rounding as core/dtype.h's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/convert.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreads;

__global__ void f32_to_bf16_kernel(__nv_bfloat16* out, const float* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void bf16_to_f32_kernel(float* out, const __nv_bfloat16* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

__global__ void f32_to_f16_kernel(__half* out, const float* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = __float2half_rn(in[i]);
}

__global__ void f16_to_f32_kernel(float* out, const __half* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = __half2float(in[i]);
}

}  // namespace

// tessera::bf16 / f16 and __nv_bfloat16 / __half are all the 16 raw bits.
void f32_to_bf16(bf16* out, const float* in, int64_t n, CudaStream stream) {
  if (n == 0) return;
  f32_to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(out),
                                                             in, n);
  TS_CUDA_CHECK_LAUNCH();
}

void bf16_to_f32(float* out, const bf16* in, int64_t n, CudaStream stream) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      out, reinterpret_cast<const __nv_bfloat16*>(in), n);
  TS_CUDA_CHECK_LAUNCH();
}

void f32_to_f16(f16* out, const float* in, int64_t n, CudaStream stream) {
  if (n == 0) return;
  f32_to_f16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(reinterpret_cast<__half*>(out), in, n);
  TS_CUDA_CHECK_LAUNCH();
}

void f16_to_f32(float* out, const f16* in, int64_t n, CudaStream stream) {
  if (n == 0) return;
  f16_to_f32_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out,
                                                            reinterpret_cast<const __half*>(in), n);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
