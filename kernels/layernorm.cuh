// LayerNorm on CUDA (kernels/layernorm.h): a warp per row for the statistics and the input
// gradient; the backward sums the parameter gradients in the same pass, per row chunk, then the
// chunks in order (cuda_util.cuh): deterministic.
//
// The kernels only: the .cu beside this header launches them (and the CPU emulation tests include
// them), so they stay in an unnamed namespace.
#pragma once

#include "kernels/cuda_util.cuh"
#include "kernels/layernorm.h"

namespace tessera::cuda {
namespace {

using cuda_detail::kThreads;
using cuda_detail::load4;
using cuda_detail::store4;
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

// float4s of a row a lane holds in registers: rows up to 32 · 4 · 16 = 2048 wide.
constexpr int kRowVecs = 16;

// The same with each lane's part of the row held in registers from its one read (of inp and add)
// to the normalized write, 16 bytes a load: C % 4 == 0, C ≤ 32 · 4 · kRowVecs, every row and
// vector 16-byte aligned (the launcher checks).
template <class Y>
__global__ void layernorm_forward_row_kernel(Y* out, float* mean, float* rstd, float* res,
                                             const float* inp, const float* add,
                                             const float* weight, const float* bias, int64_t n,
                                             int c) {
  const int64_t row = blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32, vecs = c / 4;
  if (row >= n) return;  // the whole warp
  float4 x[kRowVecs];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kRowVecs; ++k) {
    const int64_t j = row * c + 4 * (lane + 32 * k);
    if (lane + 32 * k >= vecs) continue;
    x[k] = load4(inp + j);
    if (add) {
      const float4 a = load4(add + j);
      x[k] = {x[k].x + a.x, x[k].y + a.y, x[k].z + a.z, x[k].w + a.w};
      store4(res + j, x[k]);
    }
    sum += (x[k].x + x[k].y) + (x[k].z + x[k].w);
  }
  const float m = warp_sum(sum) / c;
  float var = 0.0f;
#pragma unroll
  for (int k = 0; k < kRowVecs; ++k) {
    if (lane + 32 * k >= vecs) continue;
    const float4 d = {x[k].x - m, x[k].y - m, x[k].z - m, x[k].w - m};
    var += (d.x * d.x + d.y * d.y) + (d.z * d.z + d.w * d.w);
  }
  const float r = 1.0f / sqrtf(warp_sum(var) / c + kLayerNormEps);
#pragma unroll
  for (int k = 0; k < kRowVecs; ++k) {
    const int col = 4 * (lane + 32 * k);
    if (lane + 32 * k >= vecs) continue;
    const float4 w = load4(weight + col), b = load4(bias + col);
    store4(out + row * c + col, float4{(x[k].x - m) * r * w.x + b.x, (x[k].y - m) * r * w.y + b.y,
                                       (x[k].z - m) * r * w.z + b.z, (x[k].w - m) * r * w.w + b.w});
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// partials' rows for chunk blockIdx.x: the block's `warps` shared-memory rows (warp, 2, C) of
// Σ dout · x̂ and Σ dout added in warp order (the block's threads over the columns).
__device__ inline void add_warp_sums(float* partials, const float* sums, int warps, int c) {
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    float dw = 0.0f, db = 0.0f;
    for (int v = 0; v < warps; ++v) {
      dw += sums[2 * v * c + j];
      db += sums[(2 * v + 1) * c + j];
    }
    partials[blockIdx.x * int64_t{c} + j] = dw;
    partials[(kLayerNormChunks + blockIdx.x) * int64_t{c} + j] = db;
  }
}

// The backward in one pass over chunk blockIdx.x of the rows (kLayerNormChunks chunks). Each warp
// takes rows w, w + warps, ... of the chunk: dinp = [dres +] r · (dxhat − mean(dxhat) − xhat ·
// mean(dxhat · xhat)), dxhat = dout · weight, and adds dout · xhat and dout into its lanes' columns
// of its own shared-memory rows; then the block adds its warps' rows in warp order into partials
// (2, kLayerNormChunks, C): Σ dout · xhat, then Σ dout. dres may alias dinp (each element read by
// the lane that writes it, just before). rounded: null, or dinp's copy in H. Dynamic shared memory:
// (warps, 2, C) floats.
template <class H>
__global__ void layernorm_backward_kernel(float* dinp, H* rounded, float* partials,
                                          const float* dout, const float* inp, const float* weight,
                                          const float* mean, const float* rstd, const float* dres,
                                          int64_t n, int c) {
  TS_DYNAMIC_SHARED(float, sums);
  const int warps = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* dw_sum = sums + 2 * w * c;
  float* db_sum = dw_sum + c;
  for (int j = lane; j < c; j += 32) dw_sum[j] = db_sum[j] = 0.0f;
  const int64_t first = blockIdx.x * n / kLayerNormChunks,
                end = (blockIdx.x + 1) * n / kLayerNormChunks;
  for (int64_t row = first + w; row < end; row += warps) {
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
    H* dx_rounded = rounded ? rounded + row * c : nullptr;
#pragma unroll 4
    for (int j = lane; j < c; j += 32) {
      const float xhat = (x[j] - m) * r, g = dy[j];
      const float v = r * (g * weight[j] - mean_dxhat - xhat * mean_dxhat_xhat);
      const float d = dr ? __fadd_rn(dr[j], v) : v;  // never an FMA: the separate add's bits
      dx[j] = d;
      if (dx_rounded) cuda_detail::store(dx_rounded[j], d);
      dw_sum[j] += g * xhat;
      db_sum[j] += g;
    }
  }
  __syncthreads();
  add_warp_sums(partials, sums, warps, c);
}

// The backward with 16-byte accesses: each lane holds its part of a row (its float4s of inp's
// x̂ and of dout, VECS at most) from one read to the write of dinp (and of its 16-bit copy), and
// adds dout · x̂ and dout into its warp's shared-memory rows a float4 at a time. C % 4 == 0, C ≤
// 32 · 4 · VECS, every row and vector aligned (16 bytes; 8 for the copy) (the launcher checks).
// Otherwise as layernorm_backward_kernel: the parameter sums add the same products in the same
// order; dinp may differ in the last bits (its row sums are taken lane by lane in another order).
template <int VECS, class H>
__global__ void layernorm_backward_row_kernel(float* dinp, H* rounded, float* partials,
                                              const float* dout, const float* inp,
                                              const float* weight, const float* mean,
                                              const float* rstd, const float* dres, int64_t n,
                                              int c) {
  TS_DYNAMIC_SHARED(float, sums);
  const int warps = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32, vecs = c / 4;
  float* dw_sum = sums + 2 * w * c;
  float* db_sum = dw_sum + c;
  for (int k = lane; k < vecs; k += 32) {  // each lane's own float4s: no other lane reads them
    store4(dw_sum + 4 * k, float4{});
    store4(db_sum + 4 * k, float4{});
  }
  const int64_t first = blockIdx.x * n / kLayerNormChunks,
                end = (blockIdx.x + 1) * n / kLayerNormChunks;
  for (int64_t row = first + w; row < end; row += warps) {
    const float m = mean[row], r = rstd[row];
    float4 xhat[VECS], g[VECS];
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
#pragma unroll
    for (int k = 0; k < VECS; ++k) {
      if (lane + 32 * k >= vecs) continue;
      const int col = 4 * (lane + 32 * k);
      const float4 x = load4(inp + row * c + col), wt = load4(weight + col);
      g[k] = load4(dout + row * c + col);
      xhat[k] = {(x.x - m) * r, (x.y - m) * r, (x.z - m) * r, (x.w - m) * r};
      const float4 d = {g[k].x * wt.x, g[k].y * wt.y, g[k].z * wt.z, g[k].w * wt.w};
      sum_dxhat += (d.x + d.y) + (d.z + d.w);
      sum_dxhat_xhat += (d.x * xhat[k].x + d.y * xhat[k].y) + (d.z * xhat[k].z + d.w * xhat[k].w);
    }
    const float mean_dxhat = warp_sum(sum_dxhat) / c;
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / c;
#pragma unroll
    for (int k = 0; k < VECS; ++k) {
      if (lane + 32 * k >= vecs) continue;
      const int col = 4 * (lane + 32 * k);
      const int64_t at = row * c + col;
      const float4 wt = load4(weight + col), x = xhat[k], dy = g[k];
      float4 v = {r * (dy.x * wt.x - mean_dxhat - x.x * mean_dxhat_xhat),
                  r * (dy.y * wt.y - mean_dxhat - x.y * mean_dxhat_xhat),
                  r * (dy.z * wt.z - mean_dxhat - x.z * mean_dxhat_xhat),
                  r * (dy.w * wt.w - mean_dxhat - x.w * mean_dxhat_xhat)};
      if (dres) {  // never an FMA: the separate add's bits
        const float4 d = load4(dres + at);
        v = {__fadd_rn(d.x, v.x), __fadd_rn(d.y, v.y), __fadd_rn(d.z, v.z), __fadd_rn(d.w, v.w)};
      }
      store4(dinp + at, v);
      if (rounded) store4(rounded + at, v);
      float4 sw = load4(dw_sum + col), sb = load4(db_sum + col);
      sw = {sw.x + dy.x * x.x, sw.y + dy.y * x.y, sw.z + dy.z * x.z, sw.w + dy.w * x.w};
      sb = {sb.x + dy.x, sb.y + dy.y, sb.z + dy.z, sb.w + dy.w};
      store4(dw_sum + col, sw);
      store4(db_sum + col, sb);
    }
  }
  __syncthreads();
  add_warp_sums(partials, sums, warps, c);
}

}  // namespace
}  // namespace tessera::cuda
