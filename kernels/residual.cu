// Residual adds and the row bias on CUDA (kernels/residual.h).
#include "kernels/cuda_util.cuh"
#include "kernels/residual.h"

namespace tessera::cuda {
namespace {

using cuda_detail::blocks_for;
using cuda_detail::kThreads;

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void bias_add_kernel(float* x, const float* bias, int64_t n, int64_t c) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    x[i] += bias[i % c];
}

}  // namespace

void add(float* out, const float* a, const float* b, int64_t n, CudaStream stream) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, a, b, n);
  TS_CUDA_CHECK_LAUNCH();
}

void bias_add(float* x, const float* bias, int64_t rows, int64_t c, CudaStream stream) {
  const int64_t n = rows * c;
  if (n == 0) return;
  bias_add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, bias, n, c);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
