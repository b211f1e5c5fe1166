// GELU-tanh on CUDA (kernels/gelu.h): one grid-stride loop per pass, the CPU formula.
#include "kernels/cuda_util.cuh"
#include "kernels/gelu.h"

namespace tessera::cuda {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreads;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;

template <class Y, class X>
__global__ void gelu_forward_kernel(Y* out, const X* inp, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float x = cuda_detail::load(inp[i]);
    cuda_detail::store(out[i], 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kCoeff * x * x * x))));
  }
}

template <class D, class X>
__global__ void gelu_backward_kernel(D* dinp, const float* dout, const X* inp, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float x = cuda_detail::load(inp[i]);
    const float th = tanhf(kSqrt2OverPi * (x + kCoeff * x * x * x));
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * x * x);
    cuda_detail::store(dinp[i], dout[i] * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du));
  }
}

}  // namespace

template <class Y, class X>
void gelu_forward(Y* out, const X* inp, int64_t n, CudaStream stream) {
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(cuda_detail::cuda_ptr(out),
                                                              cuda_detail::cuda_ptr(inp), n);
  TS_CUDA_CHECK_LAUNCH();
}
template void gelu_forward(float*, const float*, int64_t, CudaStream);
template void gelu_forward(bf16*, const float*, int64_t, CudaStream);
template void gelu_forward(f16*, const float*, int64_t, CudaStream);
template void gelu_forward(bf16*, const bf16*, int64_t, CudaStream);
template void gelu_forward(f16*, const f16*, int64_t, CudaStream);

template <class D, class X>
void gelu_backward(D* dinp, const float* dout, const X* inp, int64_t n, CudaStream stream) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for(n), kThreads, 0, stream>>>(cuda_detail::cuda_ptr(dinp), dout,
                                                               cuda_detail::cuda_ptr(inp), n);
  TS_CUDA_CHECK_LAUNCH();
}
template void gelu_backward(float*, const float*, const float*, int64_t, CudaStream);
template void gelu_backward(bf16*, const float*, const float*, int64_t, CudaStream);
template void gelu_backward(f16*, const float*, const float*, int64_t, CudaStream);
template void gelu_backward(bf16*, const float*, const bf16*, int64_t, CudaStream);
template void gelu_backward(f16*, const float*, const f16*, int64_t, CudaStream);

}  // namespace tessera::cuda
