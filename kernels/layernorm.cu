// LayerNorm on CUDA (kernels/layernorm.h): a warp per row for the statistics and the input
// gradient; a thread per channel, walking the rows in order, for the parameter gradients (a fixed
// summation order: deterministic).
#include "kernels/cuda_util.cuh"
#include "kernels/layernorm.h"

namespace tessera::cuda {
namespace {

using cuda_detail::kThreads;
using cuda_detail::warp_sum;
constexpr int kRowsPerBlock = kThreads / 32;

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp,
                                         const float* weight, const float* bias, int64_t n, int c) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;            // the whole warp
  const float* x = inp + row * c;  // (C)
  float sum = 0.0f;
  for (int j = lane; j < c; j += 32) sum += x[j];
  const float m = warp_sum(sum) / c;
  float var = 0.0f;
  for (int j = lane; j < c; j += 32) var += (x[j] - m) * (x[j] - m);
  const float r = 1.0f / sqrtf(warp_sum(var) / c + kLayerNormEps);
  float* y = out + row * c;  // (C)
  for (int j = lane; j < c; j += 32) y[j] = (x[j] - m) * r * weight[j] + bias[j];
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// dinp = r · (dxhat − mean(dxhat) − xhat · mean(dxhat · xhat)), dxhat = dout · weight.
__global__ void layernorm_backward_input_kernel(float* dinp, const float* dout, const float* inp,
                                                const float* weight, const float* mean,
                                                const float* rstd, int64_t n, int c) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  const float* x = inp + row * c;
  const float* dy = dout + row * c;
  const float m = mean[row], r = rstd[row];
  float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
  for (int j = lane; j < c; j += 32) {
    const float dxhat = dy[j] * weight[j];
    sum_dxhat += dxhat;
    sum_dxhat_xhat += dxhat * (x[j] - m) * r;
  }
  const float mean_dxhat = warp_sum(sum_dxhat) / c;
  const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / c;
  float* dx = dinp + row * c;
  for (int j = lane; j < c; j += 32)
    dx[j] = r * (dy[j] * weight[j] - mean_dxhat - (x[j] - m) * r * mean_dxhat_xhat);
}

// dweight (C) += Σ_rows dout · xhat; dbias (C) += Σ_rows dout.
__global__ void layernorm_backward_params_kernel(float* dweight, float* dbias, const float* dout,
                                                 const float* inp, const float* mean,
                                                 const float* rstd, int64_t n, int c) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  float dw = 0.0f, db = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float dy = dout[i * c + j];
    dw += dy * (inp[i * c + j] - mean[i]) * rstd[i];
    db += dy;
  }
  dweight[j] += dw;
  dbias[j] += db;
}

unsigned row_blocks(int64_t n) {
  return static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t n, int64_t c, CudaStream stream) {
  if (n == 0) return;
  layernorm_forward_kernel<<<row_blocks(n), kThreads, 0, stream>>>(out, mean, rstd, inp, weight,
                                                                   bias, n, static_cast<int>(c));
  TS_CUDA_CHECK_LAUNCH();
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int64_t n, int64_t c, CudaStream stream) {
  if (n == 0) return;
  const int ci = static_cast<int>(c);
  layernorm_backward_input_kernel<<<row_blocks(n), kThreads, 0, stream>>>(dinp, dout, inp, weight,
                                                                          mean, rstd, n, ci);
  TS_CUDA_CHECK_LAUNCH();
  layernorm_backward_params_kernel<<<static_cast<unsigned>((c + kThreads - 1) / kThreads), kThreads,
                                     0, stream>>>(dweight, dbias, dout, inp, mean, rstd, n, ci);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
