// LayerNorm on CUDA (kernels/layernorm.h): a warp per row for the statistics and the input
// gradient; the parameter gradients as column sums in a fixed order (cuda_util.cuh: per row chunk,
// then the chunks in order): deterministic.
#include "kernels/cuda_util.cuh"
#include "kernels/layernorm.h"

namespace tessera::cuda {
namespace {

using cuda_detail::kThreads;
using cuda_detail::warp_sum;
constexpr int kRowsPerBlock = kThreads / 32;

// With add non-null the row is inp + add, written to res first; each lane reads back only what it
// wrote, and add's row is read before out's (which may alias it) is written. Y: out's type.
template <class Y>
__global__ void layernorm_forward_kernel(Y* out, float* mean, float* rstd, float* res,
                                         const float* inp, const float* add, const float* weight,
                                         const float* bias, int64_t n, int c) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;            // the whole warp
  const float* x = inp + row * c;  // (C)
  if (add) {
    float* r = res + row * c;
    const float* a = add + row * c;
    for (int j = lane; j < c; j += 32) r[j] = x[j] + a[j];
    x = r;
  }
  float sum = 0.0f;
#pragma unroll 4  // several loads in flight per lane
  for (int j = lane; j < c; j += 32) sum += x[j];
  const float m = warp_sum(sum) / c;
  float var = 0.0f;
  for (int j = lane; j < c; j += 32) var += (x[j] - m) * (x[j] - m);
  const float r = 1.0f / sqrtf(warp_sum(var) / c + kLayerNormEps);
  Y* y = out + row * c;  // (C)
  for (int j = lane; j < c; j += 32) cuda_detail::store(y[j], (x[j] - m) * r * weight[j] + bias[j]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// dinp = [dres +] r · (dxhat − mean(dxhat) − xhat · mean(dxhat · xhat)), dxhat = dout · weight.
// dres may alias dinp (each element read by the lane that writes it, just before).
__global__ void layernorm_backward_input_kernel(float* dinp, const float* dout, const float* inp,
                                                const float* weight, const float* mean,
                                                const float* rstd, const float* dres, int64_t n,
                                                int c) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= n) return;
  const float* x = inp + row * c;
  const float* dy = dout + row * c;
  const float m = mean[row], r = rstd[row];
  float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
#pragma unroll 4  // several loads in flight per lane
  for (int j = lane; j < c; j += 32) {
    const float dxhat = dy[j] * weight[j];
    sum_dxhat += dxhat;
    sum_dxhat_xhat += dxhat * (x[j] - m) * r;
  }
  const float mean_dxhat = warp_sum(sum_dxhat) / c;
  const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / c;
  float* dx = dinp + row * c;
  const float* dr = dres ? dres + row * c : nullptr;
  for (int j = lane; j < c; j += 32) {
    const float g = r * (dy[j] * weight[j] - mean_dxhat - (x[j] - m) * r * mean_dxhat_xhat);
    dx[j] = dr ? __fadd_rn(dr[j], g) : g;  // never contracted into an FMA: the separate add's bits
  }
}

// Per row chunk: partials (2, kRowChunks, C) = Σ dout · xhat, then Σ dout, over the chunk's rows.
__global__ void layernorm_param_partials_kernel(float* partials, const float* dout,
                                                const float* inp, const float* mean,
                                                const float* rstd, int64_t n, int c) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  int64_t first, end;
  cuda_detail::chunk_rows(n, first, end);
  float dw = 0.0f, db = 0.0f;
#pragma unroll 8  // loads of 8 rows in flight (the sums keep their order)
  for (int64_t i = first; i < end; ++i) {
    const float dy = dout[i * c + j];
    dw += dy * (inp[i * c + j] - mean[i]) * rstd[i];
    db += dy;
  }
  partials[blockIdx.y * int64_t{c} + j] = dw;
  partials[(cuda_detail::kRowChunks + blockIdx.y) * int64_t{c} + j] = db;
}

unsigned row_blocks(int64_t n) {
  return static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
}

}  // namespace

template <class Y>
void layernorm_forward(Y* out, float* mean, float* rstd, float* res, const float* inp,
                       const float* b, const float* weight, const float* bias, int64_t n, int64_t c,
                       CudaStream stream) {
  if (n == 0) return;
  layernorm_forward_kernel<<<row_blocks(n), kThreads, 0, stream>>>(
      cuda_detail::cuda_ptr(out), mean, rstd, res, inp, b, weight, bias, n, static_cast<int>(c));
  TS_CUDA_CHECK_LAUNCH();
}
template void layernorm_forward(float*, float*, float*, float*, const float*, const float*,
                                const float*, const float*, int64_t, int64_t, CudaStream);
template void layernorm_forward(bf16*, float*, float*, float*, const float*, const float*,
                                const float*, const float*, int64_t, int64_t, CudaStream);
template void layernorm_forward(f16*, float*, float*, float*, const float*, const float*,
                                const float*, const float*, int64_t, int64_t, CudaStream);

void layernorm_backward(float* dinp, float* dweight, float* dbias, float* partials,
                        const float* dout, const float* inp, const float* weight, const float* mean,
                        const float* rstd, const float* dresidual, int64_t n, int64_t c,
                        CudaStream stream) {
  static_assert(kLayerNormChunks == cuda_detail::kRowChunks);
  if (n == 0) return;
  const int ci = static_cast<int>(c);
  layernorm_backward_input_kernel<<<row_blocks(n), kThreads, 0, stream>>>(
      dinp, dout, inp, weight, mean, rstd, dresidual, n, ci);
  TS_CUDA_CHECK_LAUNCH();
  layernorm_param_partials_kernel<<<cuda_detail::partial_grid(c), kThreads, 0, stream>>>(
      partials, dout, inp, mean, rstd, n, ci);
  TS_CUDA_CHECK_LAUNCH();
  const int64_t chunk_floats = int64_t{cuda_detail::kRowChunks} * c;
  cuda_detail::add_partials_kernel<<<cuda_detail::column_blocks(c), kThreads, 0, stream>>>(
      dweight, partials, c);
  TS_CUDA_CHECK_LAUNCH();
  cuda_detail::add_partials_kernel<<<cuda_detail::column_blocks(c), kThreads, 0, stream>>>(
      dbias, partials + chunk_floats, c);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
