// Causal attention on CUDA (kernels/attention.h), FlashAttention-style in fp32: a warp per query
// row walks the keys up to it with an online softmax, so no T×T matrix exists; lanes split the
// head dimension (hs ≤ 128, up to 4 values per lane, kept in registers). Backward recomputes
// the probabilities from the saved log-sum-exp: D = rowsum(dO ∘ O) first, then a warp per query
// row for dq and a warp per key row for dk and dv, each summing in a fixed order (no atomics:
// deterministic).
#include <cfloat>

#include "kernels/attention.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::kThreads;
using cuda_detail::warp_sum;
constexpr int kWarps = kThreads / 32;  // rows per block
constexpr int kMaxPerLane = 4;         // hs ≤ 32 · 4

// Where (b, h)'s rows start and how far apart they are, in floats.
struct Head {
  int64_t t, hs, c;  // sequence length, head size, model width
  __device__ int64_t qkv_row(int64_t b, int64_t i) const { return (b * t + i) * 3 * c; }
  __device__ int64_t out_row(int64_t b, int64_t i) const { return (b * t + i) * c; }
};

// v[r] = row[lane + 32 r] for the lane's share of one head-sized row (0 past hs).
__device__ inline void load(float (&v)[kMaxPerLane], const float* row, int64_t hs, int lane) {
#pragma unroll
  for (int r = 0; r < kMaxPerLane; ++r) {
    const int64_t d = lane + 32 * r;
    v[r] = d < hs ? row[d] : 0.0f;
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

// Σ_d a[d] · row[d] over the whole warp.
__device__ inline float dot(const float (&a)[kMaxPerLane], const float* row, int64_t hs, int lane) {
  float s = 0.0f;
#pragma unroll
  for (int r = 0; r < kMaxPerLane; ++r) {
    const int64_t d = lane + 32 * r;
    if (d < hs) s += a[r] * row[d];
  }
  return warp_sum(s);
}

// grid (ceil(T / kWarps), B · NH). out (B, T, C), lse (B, NH, T), qkv (B, T, 3C).
__global__ void attention_forward_kernel(float* out, float* lse, const float* qkv, Head hd,
                                         int64_t nh, float scale) {
  const int lane = threadIdx.x % 32;
  const int64_t i = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  const int64_t b = blockIdx.y / nh, h = blockIdx.y % nh;
  if (i >= hd.t) return;  // the whole warp
  const float* base = qkv + h * hd.hs;
  float q[kMaxPerLane], acc[kMaxPerLane] = {};
  load(q, base + hd.qkv_row(b, i), hd.hs, lane);
  float m = -FLT_MAX, l = 0.0f;
  for (int64_t j = 0; j <= i; ++j) {
    const float* k = base + hd.qkv_row(b, j) + hd.c;
    const float s = dot(q, k, hd.hs, lane) * scale;
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new), p = expf(s - m_new);
    l = l * correction + p;
    const float* v = k + hd.c;
#pragma unroll
    for (int r = 0; r < kMaxPerLane; ++r) {
      const int64_t d = lane + 32 * r;
      acc[r] = acc[r] * correction + (d < hd.hs ? p * v[d] : 0.0f);
    }
    m = m_new;
  }
  store(out + hd.out_row(b, i) + h * hd.hs, acc, 1.0f / l, hd.hs, lane);
  if (lane == 0) lse[blockIdx.y * hd.t + i] = m + logf(l);
}

// delta (B, NH, T) = Σ_d dout · out over each head's row.
__global__ void attention_delta_kernel(float* delta, const float* dout, const float* out, Head hd,
                                       int64_t nh) {
  const int lane = threadIdx.x % 32;
  const int64_t i = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  const int64_t b = blockIdx.y / nh, h = blockIdx.y % nh;
  if (i >= hd.t) return;
  float o[kMaxPerLane];
  load(o, out + hd.out_row(b, i) + h * hd.hs, hd.hs, lane);
  const float d = dot(o, dout + hd.out_row(b, i) + h * hd.hs, hd.hs, lane);
  if (lane == 0) delta[blockIdx.y * hd.t + i] = d;
}

// dq_i = scale · Σ_{j ≤ i} p_ij (dp_ij − D_i) k_j, p_ij = exp(scale q_i·k_j − lse_i),
// dp_ij = dO_i·v_j. A warp per query row i.
__global__ void attention_dq_kernel(float* dqkv, const float* dout, const float* qkv,
                                    const float* lse, const float* delta, Head hd, int64_t nh,
                                    float scale) {
  const int lane = threadIdx.x % 32;
  const int64_t i = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  const int64_t b = blockIdx.y / nh, h = blockIdx.y % nh;
  if (i >= hd.t) return;
  const float* base = qkv + h * hd.hs;
  float q[kMaxPerLane], d_o[kMaxPerLane], dq[kMaxPerLane] = {};
  load(q, base + hd.qkv_row(b, i), hd.hs, lane);
  load(d_o, dout + hd.out_row(b, i) + h * hd.hs, hd.hs, lane);
  const float lse_i = lse[blockIdx.y * hd.t + i], delta_i = delta[blockIdx.y * hd.t + i];
  for (int64_t j = 0; j <= i; ++j) {
    const float* k = base + hd.qkv_row(b, j) + hd.c;
    const float p = expf(dot(q, k, hd.hs, lane) * scale - lse_i);
    const float ds = p * (dot(d_o, k + hd.c, hd.hs, lane) - delta_i);
#pragma unroll
    for (int r = 0; r < kMaxPerLane; ++r) {
      const int64_t d = lane + 32 * r;
      if (d < hd.hs) dq[r] += ds * k[d];
    }
  }
  store(dqkv + hd.qkv_row(b, i) + h * hd.hs, dq, scale, hd.hs, lane);
}

// dv_j = Σ_{i ≥ j} p_ij dO_i;  dk_j = scale · Σ_{i ≥ j} p_ij (dp_ij − D_i) q_i. A warp per key
// row j.
__global__ void attention_dkv_kernel(float* dqkv, const float* dout, const float* qkv,
                                     const float* lse, const float* delta, Head hd, int64_t nh,
                                     float scale) {
  const int lane = threadIdx.x % 32;
  const int64_t j = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  const int64_t b = blockIdx.y / nh, h = blockIdx.y % nh;
  if (j >= hd.t) return;
  const float* base = qkv + h * hd.hs;
  float k[kMaxPerLane], v[kMaxPerLane], dk[kMaxPerLane] = {}, dv[kMaxPerLane] = {};
  load(k, base + hd.qkv_row(b, j) + hd.c, hd.hs, lane);
  load(v, base + hd.qkv_row(b, j) + 2 * hd.c, hd.hs, lane);
  for (int64_t i = j; i < hd.t; ++i) {
    const float* q = base + hd.qkv_row(b, i);
    const float* d_o = dout + hd.out_row(b, i) + h * hd.hs;
    const float p = expf(dot(k, q, hd.hs, lane) * scale - lse[blockIdx.y * hd.t + i]);
    const float ds = p * (dot(v, d_o, hd.hs, lane) - delta[blockIdx.y * hd.t + i]);
#pragma unroll
    for (int r = 0; r < kMaxPerLane; ++r) {
      const int64_t d = lane + 32 * r;
      if (d < hd.hs) {
        dv[r] += p * d_o[d];
        dk[r] += ds * q[d];
      }
    }
  }
  store(dqkv + hd.qkv_row(b, j) + h * hd.hs + hd.c, dk, scale, hd.hs, lane);
  store(dqkv + hd.qkv_row(b, j) + h * hd.hs + 2 * hd.c, dv, 1.0f, hd.hs, lane);
}

dim3 grid(int64_t b, int64_t t, int64_t nh) {
  TS_CHECK(b * nh <= 65535, "attention on CUDA takes at most 65535 (batch x heads), got ", b * nh,
           ": use a smaller train.batch_size");
  return dim3(static_cast<unsigned>((t + kWarps - 1) / kWarps), static_cast<unsigned>(b * nh));
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int64_t b, int64_t t, int64_t c,
                       int64_t nh, CudaStream stream) {
  const int64_t hs = c / nh;
  TS_CHECK(hs <= 32 * kMaxPerLane, "attention on CUDA takes head sizes up to ", 32 * kMaxPerLane,
           ", got ", hs);
  if (b * t == 0) return;
  attention_forward_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(
      out, lse, qkv, Head{t, hs, c}, nh, 1.0f / sqrtf(static_cast<float>(hs)));
  TS_CUDA_CHECK_LAUNCH();
}

void attention_backward(float* dqkv, float* delta, const float* dout, const float* qkv,
                        const float* out, const float* lse, int64_t b, int64_t t, int64_t c,
                        int64_t nh, CudaStream stream) {
  const int64_t hs = c / nh;
  TS_CHECK(hs <= 32 * kMaxPerLane, "attention on CUDA takes head sizes up to ", 32 * kMaxPerLane,
           ", got ", hs);
  if (b * t == 0) return;
  const Head hd{t, hs, c};
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  attention_delta_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(delta, dout, out, hd, nh);
  TS_CUDA_CHECK_LAUNCH();
  attention_dq_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(dqkv, dout, qkv, lse, delta, hd, nh,
                                                               scale);
  TS_CUDA_CHECK_LAUNCH();
  attention_dkv_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(dqkv, dout, qkv, lse, delta, hd, nh,
                                                                scale);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
