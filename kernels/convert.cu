// f32 <-> bf16 / f16 on CUDA (kernels/convert.h): the same rounding as core/dtype.h's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/convert.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreads;

__device__ inline void convert_one(__nv_bfloat16& out, float in) {
  out = __float2bfloat16_rn(in);
}
__device__ inline void convert_one(__half& out, float in) {
  out = __float2half_rn(in);
}
__device__ inline void convert_one(float& out, __nv_bfloat16 in) {
  out = __bfloat162float(in);
}
__device__ inline void convert_one(float& out, __half in) {
  out = __half2float(in);
}

template <typename To, typename From>
__global__ void convert_kernel(To* out, const From* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    convert_one(out[i], in[i]);
}

// tessera::bf16 / f16 and __nv_bfloat16 / __half are all the 16 raw bits: CudaTo and CudaFrom are
// the CUDA types of the same bits.
template <typename CudaTo, typename CudaFrom, typename To, typename From>
void launch(To* out, const From* in, int64_t n, CudaStream stream) {
  if (n == 0) return;
  convert_kernel<<<blocks_for(n), kThreads, 0, stream>>>(reinterpret_cast<CudaTo*>(out),
                                                         reinterpret_cast<const CudaFrom*>(in), n);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace

void f32_to_bf16(bf16* out, const float* in, int64_t n, CudaStream stream) {
  launch<__nv_bfloat16, float>(out, in, n, stream);
}
void bf16_to_f32(float* out, const bf16* in, int64_t n, CudaStream stream) {
  launch<float, __nv_bfloat16>(out, in, n, stream);
}
void f32_to_f16(f16* out, const float* in, int64_t n, CudaStream stream) {
  launch<__half, float>(out, in, n, stream);
}
void f16_to_f32(float* out, const f16* in, int64_t n, CudaStream stream) {
  launch<float, __half>(out, in, n, stream);
}

}  // namespace tessera::cuda
