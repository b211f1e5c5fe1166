// Causal attention on CUDA (kernels/attention.h), FlashAttention-style in fp32: no T×T matrix
// exists. A block of 8 warps takes 8 consecutive rows of one (batch, head); the keys (queries,
// for dk and dv) come through shared memory 32 at a time, one per lane: each lane scores its key
// with a whole dot product, the warp takes the tile's maximum and sum with one reduction each,
// and each lane accumulates its share of the head dimension (hs ≤ 128: up to 4 values per lane)
// from the tile's rows with the probabilities broadcast by shuffles. Forward keeps an online
// softmax and saves the log-sum-exp; backward recomputes the probabilities from it: D =
// rowsum(dO ∘ O), then one kernel for dq (rows are queries) and one for dk and dv (rows are
// keys), each summing in a fixed order (no atomics: deterministic).
//
// The kernels only: kernels/attention.cu launches them (and the CPU emulation tests include
// them), so they stay in an unnamed namespace.
#pragma once

#include <cfloat>

#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::kThreads;
using cuda_detail::warp_max;
using cuda_detail::warp_sum;
constexpr int kWarps = kThreads / 32;  // rows per block
constexpr int kTile = 32;              // keys (or queries) per shared-memory tile: one per lane
constexpr int kMaxHs = 128;            // largest head size
constexpr int kMaxPerLane = kMaxHs / 32;
constexpr int kPad = kMaxHs + 1;  // row stride of tiles read one row per lane: no bank conflicts
constexpr unsigned kFullMask = 0xffffffffu;

// One (batch, head): the head's columns of q, k, v (qkv, rows 3C apart) and of out/dout (rows C
// apart), and the row of lse/delta values.
struct Head {
  int64_t t, hs, c;
  const float* q;      // q of row 0; k at + c, v at + 2c
  int64_t stats;       // index of row 0 in lse / delta: (b · NH + h) · T
  int64_t out_offset;  // offset of row 0 in out / dout: b · T · C + h · hs
  int64_t qkv_offset;  // offset of row 0's q in qkv: b · T · 3C + h · hs
};

__device__ inline Head head_of(const float* qkv, int64_t t, int64_t c, int64_t nh) {
  const int64_t b = blockIdx.y / nh, h = blockIdx.y % nh, hs = c / nh;
  const int64_t qkv_offset = b * t * 3 * c + h * hs;
  return {
      t,         hs, c, qkv + qkv_offset, static_cast<int64_t>(blockIdx.y) * t, b * t * c + h * hs,
      qkv_offset};
}

// tile[r * stride + d] = src[(first + r) · row_stride + d] for the tile's rows (zeros past t),
// d < hs. The whole block takes part.
__device__ inline void load_tile(float* tile, int stride, const float* src, int64_t row_stride,
                                 int64_t first, int rows, const Head& hd) {
  for (int64_t e = threadIdx.x; e < rows * hd.hs; e += kThreads) {
    const int64_t r = e / hd.hs, d = e % hd.hs, i = first + r;
    tile[r * stride + d] = i < hd.t ? src[i * row_stride + d] : 0.0f;
  }
}

// Σ_d a[d] · b[d] over d < hs, by one thread (shared-memory rows).
__device__ inline float dot(const float* a, const float* b, int64_t hs) {
  float s = 0.0f;
  for (int64_t d = 0; d < hs; ++d) s += a[d] * b[d];
  return s;
}

// acc[r] += Σ_k weight_k · tile[k][lane + 32 r], weight_k being lane k's `weight`.
__device__ inline void accumulate(float (&acc)[kMaxPerLane], float weight, const float* tile,
                                  int stride, int64_t hs, int lane) {
  for (int k = 0; k < kTile; ++k) {
    const float wk = __shfl_sync(kFullMask, weight, k);
#pragma unroll
    for (int r = 0; r < kMaxPerLane; ++r) {
      const int64_t d = lane + 32 * r;
      if (d < hs) acc[r] += wk * tile[k * stride + d];
    }
  }
}

__device__ inline void store(float* row, const float (&v)[kMaxPerLane], float scale, int64_t hs,
                             int lane) {
#pragma unroll
  for (int r = 0; r < kMaxPerLane; ++r) {
    const int64_t d = lane + 32 * r;
    if (d < hs) row[d] = v[r] * scale;
  }
}

// grid (ceil(T / kWarps), B · NH). out (B, T, C), lse (B, NH, T), qkv (B, T, 3C).
__global__ void attention_forward_kernel(float* out, float* lse, const float* qkv, int64_t t,
                                         int64_t c, int64_t nh, float scale) {
  __shared__ float ks[kTile * kPad], vs[kTile * kMaxHs], qs[kWarps * kMaxHs];
  const Head hd = head_of(qkv, t, c, nh);
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int64_t i0 = blockIdx.x * int64_t{kWarps}, i = i0 + w;
  load_tile(qs, kMaxHs, hd.q, 3 * c, i0, kWarps, hd);
  float acc[kMaxPerLane] = {};
  float m = -FLT_MAX, l = 0.0f;
  const int64_t last = (i0 + kWarps < t ? i0 + kWarps : t) - 1;  // the block's last row
  for (int64_t j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and qs is written, the first time)
    load_tile(ks, kPad, hd.q + c, 3 * c, j0, kTile, hd);
    load_tile(vs, kMaxHs, hd.q + 2 * c, 3 * c, j0, kTile, hd);
    __syncthreads();
    if (i >= t || j0 > i) continue;  // the whole warp: nothing of this tile is visible to row i
    const bool visible = j0 + lane <= i;
    const float s = visible ? dot(qs + w * kMaxHs, ks + lane * kPad, hd.hs) * scale : -FLT_MAX;
    const float m_new = fmaxf(m, warp_max(s));
    const float p = visible ? expf(s - m_new) : 0.0f, correction = expf(m - m_new);
    l = l * correction + warp_sum(p);
#pragma unroll
    for (int r = 0; r < kMaxPerLane; ++r) acc[r] *= correction;
    accumulate(acc, p, vs, kMaxHs, hd.hs, lane);
    m = m_new;
  }
  if (i >= t) return;
  store(out + hd.out_offset + i * c, acc, 1.0f / l, hd.hs, lane);
  if (lane == 0) lse[hd.stats + i] = m + logf(l);
}

// delta (B, NH, T) = Σ_d dout · out over each head's row: a warp per row. grid (ceil(T / 8),
// B · NH).
__global__ void attention_delta_kernel(float* delta, const float* dout, const float* out, int64_t t,
                                       int64_t c, int64_t nh) {
  const int64_t b = blockIdx.y / nh, h = blockIdx.y % nh, hs = c / nh;
  const int lane = threadIdx.x % 32;
  const int64_t i = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  if (i >= t) return;
  const int64_t row = (b * t + i) * c + h * hs;
  float s = 0.0f;
  for (int64_t d = lane; d < hs; d += 32) s += out[row + d] * dout[row + d];
  s = warp_sum(s);
  if (lane == 0) delta[blockIdx.y * t + i] = s;
}

// dq_i = scale · Σ_{j ≤ i} p_ij (dp_ij − D_i) k_j with p_ij = exp(scale q_i·k_j − lse_i),
// dp_ij = dO_i·v_j. Rows are queries; keys come through shared memory.
__global__ void attention_dq_kernel(float* dqkv, const float* dout, const float* qkv,
                                    const float* lse, const float* delta, int64_t t, int64_t c,
                                    int64_t nh, float scale) {
  __shared__ float ks[kTile * kPad], vs[kTile * kPad], qs[kWarps * kMaxHs], dos[kWarps * kMaxHs];
  const Head hd = head_of(qkv, t, c, nh);
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int64_t i0 = blockIdx.x * int64_t{kWarps}, i = i0 + w;
  load_tile(qs, kMaxHs, hd.q, 3 * c, i0, kWarps, hd);
  load_tile(dos, kMaxHs, dout + hd.out_offset, c, i0, kWarps, hd);
  const float lse_i = i < t ? lse[hd.stats + i] : 0.0f;
  const float delta_i = i < t ? delta[hd.stats + i] : 0.0f;
  float dq[kMaxPerLane] = {};
  const int64_t last = (i0 + kWarps < t ? i0 + kWarps : t) - 1;
  for (int64_t j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();
    load_tile(ks, kPad, hd.q + c, 3 * c, j0, kTile, hd);
    load_tile(vs, kPad, hd.q + 2 * c, 3 * c, j0, kTile, hd);
    __syncthreads();
    if (i >= t || j0 > i) continue;
    float ds = 0.0f;
    if (j0 + lane <= i) {
      const float p = expf(dot(qs + w * kMaxHs, ks + lane * kPad, hd.hs) * scale - lse_i);
      ds = p * (dot(dos + w * kMaxHs, vs + lane * kPad, hd.hs) - delta_i);
    }
    accumulate(dq, ds, ks, kPad, hd.hs, lane);
  }
  if (i >= t) return;
  store(dqkv + hd.qkv_offset + i * 3 * c, dq, scale, hd.hs, lane);
}

// dv_j = Σ_{i ≥ j} p_ij dO_i;  dk_j = scale · Σ_{i ≥ j} p_ij (dp_ij − D_i) q_i. Rows are keys;
// queries (with dO, lse and D) come through shared memory.
__global__ void attention_dkv_kernel(float* dqkv, const float* dout, const float* qkv,
                                     const float* lse, const float* delta, int64_t t, int64_t c,
                                     int64_t nh, float scale) {
  __shared__ float qs[kTile * kPad], dos[kTile * kPad], kk[kWarps * kMaxHs], vv[kWarps * kMaxHs];
  __shared__ float lse_t[kTile], delta_t[kTile];
  const Head hd = head_of(qkv, t, c, nh);
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int64_t j0 = blockIdx.x * int64_t{kWarps}, j = j0 + w;
  load_tile(kk, kMaxHs, hd.q + c, 3 * c, j0, kWarps, hd);
  load_tile(vv, kMaxHs, hd.q + 2 * c, 3 * c, j0, kWarps, hd);
  float dk[kMaxPerLane] = {}, dv[kMaxPerLane] = {};
  for (int64_t i0 = j0; i0 < t; i0 += kTile) {
    __syncthreads();
    load_tile(qs, kPad, hd.q, 3 * c, i0, kTile, hd);
    load_tile(dos, kPad, dout + hd.out_offset, c, i0, kTile, hd);
    if (threadIdx.x < kTile) {
      const int64_t i = i0 + threadIdx.x;
      lse_t[threadIdx.x] = i < t ? lse[hd.stats + i] : 0.0f;
      delta_t[threadIdx.x] = i < t ? delta[hd.stats + i] : 0.0f;
    }
    __syncthreads();
    if (j >= t) continue;
    const int64_t i = i0 + lane;
    float p = 0.0f, ds = 0.0f;
    if (i >= j && i < t) {
      p = expf(dot(kk + w * kMaxHs, qs + lane * kPad, hd.hs) * scale - lse_t[lane]);
      ds = p * (dot(vv + w * kMaxHs, dos + lane * kPad, hd.hs) - delta_t[lane]);
    }
    accumulate(dv, p, dos, kPad, hd.hs, lane);
    accumulate(dk, ds, qs, kPad, hd.hs, lane);
  }
  if (j >= t) return;
  store(dqkv + hd.qkv_offset + j * 3 * c + c, dk, scale, hd.hs, lane);
  store(dqkv + hd.qkv_offset + j * 3 * c + 2 * c, dv, 1.0f, hd.hs, lane);
}

}  // namespace
}  // namespace tessera::cuda
