// Causal attention on the tensor cores (kernels/attention.h, the 16-bit launchers): the tiling of
// the fp32 kernels in attention.cu, with every product a WMMA 16×16×16 multiply of bf16 (or fp16)
// operands into fp32 accumulators. q, k, v, dout stay f32 in device memory and are rounded as
// their tiles enter shared memory; softmax statistics, lse, D and every accumulator are fp32.
//
// A block of 4 warps takes 64 rows of one (batch, head), 16 per warp, against 64-column tiles of
// the other side. Each warp's tile products go to shared memory (WMMA's register layout is not
// specified, so row-wise work reads them there): lane l works on row l / 2, half l % 2 of the
// columns. Forward keeps an online softmax (O is rescaled in shared memory before P·V is added);
// P is rounded to 16 bits before P·V, its row sum taken from the rounded values. Backward
// recomputes P from the saved lse: one kernel for dq (rows are queries) and one for dk and dv
// (rows are keys), each accumulating over tiles in a fixed order: deterministic, no atomics.
// Tiles start on multiples of 64 on both sides, so every tile a block visits holds column (or
// row) 0 of its 64 and no row's maximum is ever −∞.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using cuda_detail::load;
using cuda_detail::store;

constexpr int kWarps = 4;
constexpr int kThreadsTc = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // rows of the block's own side
constexpr int kCols = 64;           // rows of the other side per tile
constexpr int kMaxHs = 128;
constexpr int kPad16 = 8;  // row padding of 16-bit tiles, in elements (keeps WMMA's 32-byte rule)
constexpr int kPad32 = 4;  // row padding of fp32 tiles
constexpr unsigned kFullMask = 0xffffffffu;

// Shared-memory tiles cut one after another, each 128-byte aligned (WMMA wants 32): from the
// kernel's allocation (pointer arithmetic on it, so the compiler keeps shared-memory addressing),
// or only measured on the host (SizeCarver, null pointers). Each kernel's Tiles take either.
__host__ __device__ constexpr size_t carved(size_t bytes) {
  return (bytes + 127) / 128 * 128;
}
struct SmemCarver {
  unsigned char* base;
  size_t used = 0;
  template <class T>
  __host__ __device__ T* take(size_t n) {
    T* p = reinterpret_cast<T*>(base + used);
    used += carved(n * sizeof(T));
    return p;
  }
};
struct SizeCarver {
  size_t used = 0;
  template <class T>
  __host__ __device__ T* take(size_t n) {
    used += carved(n * sizeof(T));
    return nullptr;
  }
};

// Row-wise loops start lane `lane`'s walk over its 32 columns (or hs / 2 values) at a rotation:
// rows 8 apart and the two halves of a row share banks (row strides are 4 words past a multiple
// of 32), and the rotation puts the four lanes that would collide on four banks.
__device__ inline int rotation(int lane) {
  return lane % 2 + 2 * (lane / 16);
}

// The row strides of a block's tiles for head size hs.
struct Strides {
  int hs;
  __host__ __device__ int h16() const { return hs + kPad16; }     // (rows, hs) 16-bit
  __host__ __device__ int h32() const { return hs + kPad32; }     // (rows, hs) fp32
  __host__ __device__ int c16() const { return kCols + kPad16; }  // (rows, kCols) 16-bit
  __host__ __device__ int c32() const { return kCols + kPad32; }  // (rows, kCols) fp32
};

// A (rows, hs) 16-bit tile to fill from fp32 rows: row i of the source at src + i * ld.
template <class T>
struct RowSource {
  T* tile;
  const float* src;
  int64_t ld;
};

// Each tile (rows, hs), row stride `tile_ld`, = its source's rows [first, first + rows) rounded
// to T, zeros past t; the whole block takes part. 16-byte loads (launchers check the alignment),
// each thread's loads of a batch issued before any store, so their latencies overlap: one
// dependent load at a time left the tensor cores idle most of the kernel.
template <int kTiles, class T>
__device__ void load_rows(const RowSource<T> (&tiles)[kTiles], int tile_ld, int64_t first, int rows,
                          int64_t t, int hs) {
  constexpr int kBatch = 8 / kTiles;  // 16-byte loads in flight per tile
  const int per_row = hs / 4, n = rows * per_row;
  for (int e0 = threadIdx.x; e0 < n; e0 += kBatch * kThreadsTc) {
    float4 v[kTiles][kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = e0 + u * kThreadsTc, r = e / per_row, d = 4 * (e % per_row);
      const bool in = e < n && first + r < t;
#pragma unroll
      for (int s = 0; s < kTiles; ++s)
        v[s][u] = in ? __ldg(reinterpret_cast<const float4*>(tiles[s].src +
                                                             (first + r) * tiles[s].ld + d))
                     : float4{0.0f, 0.0f, 0.0f, 0.0f};
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int e = e0 + u * kThreadsTc, r = e / per_row, d = 4 * (e % per_row);
      if (e >= n) break;
#pragma unroll
      for (int s = 0; s < kTiles; ++s) {
        alignas(8) T x[4];
        store(x[0], v[s][u].x);
        store(x[1], v[s][u].y);
        store(x[2], v[s][u].z);
        store(x[3], v[s][u].w);
        *reinterpret_cast<uint2*>(tiles[s].tile + r * tile_ld + d) = *reinterpret_cast<uint2*>(x);
      }
    }
  }
}

template <class T>
__device__ void zero_rows(T* tile, int ld, int rows, int cols) {
  for (int e = threadIdx.x; e < rows * cols; e += kThreadsTc) tile[e / cols * ld + e % cols] = T{};
}

// One warp: c (16, n) = a (16, k) · op(b) [+ c], c fp32 in shared memory. b is stored (k, n)
// row-major when kTransB is false, (n, k) row-major when it is true; n and k multiples of 16.
template <bool kTransB, class T>
__device__ void warp_gemm(float* c, int ldc, const T* a, int lda, const T* b, int ldb, int n, int k,
                          bool accumulate) {
  using LayoutB = std::conditional_t<kTransB, wmma::col_major, wmma::row_major>;
  for (int n0 = 0; n0 < n; n0 += 16) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    if (accumulate)
      wmma::load_matrix_sync(acc, c + n0, ldc, wmma::mem_row_major);
    else
      wmma::fill_fragment(acc, 0.0f);
    for (int k0 = 0; k0 < k; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LayoutB> fb;
      wmma::load_matrix_sync(fa, a + k0, lda);
      wmma::load_matrix_sync(fb, kTransB ? b + n0 * ldb + k0 : b + k0 * ldb + n0, ldb);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(c + n0, acc, ldc, wmma::mem_row_major);
  }
}

// A warp's (16, hs) accumulators held in registers across tiles: column block f in acc[f].
using Accumulator = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
using Accumulators = Accumulator[kMaxHs / 16];

__device__ inline void zero(Accumulators& acc) {
#pragma unroll
  for (int f = 0; f < kMaxHs / 16; ++f) wmma::fill_fragment(acc[f], 0.0f);
}

// One warp: acc (16, n) += a (16, k) · b, b stored (k, n) row-major; n ≤ kMaxHs and k multiples
// of 16.
template <class T>
__device__ void warp_gemm(Accumulators& acc, const T* a, int lda, const T* b, int ldb, int n,
                          int k) {
#pragma unroll
  for (int f = 0; f < kMaxHs / 16; ++f) {
    if (16 * f >= n) continue;
    for (int k0 = 0; k0 < k; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
      wmma::load_matrix_sync(fa, a + k0, lda);
      wmma::load_matrix_sync(fb, b + k0 * ldb + 16 * f, ldb);
      wmma::mma_sync(acc[f], fa, fb, acc[f]);
    }
  }
}

// One warp: its (16, n) accumulators times `scale` into tile (16, n) row-major, fp32.
__device__ inline void store_scaled(float* tile, int ld, Accumulators& acc, int n, float scale) {
#pragma unroll
  for (int f = 0; f < kMaxHs / 16; ++f) {
    if (16 * f >= n) continue;
    for (int e = 0; e < acc[f].num_elements; ++e) acc[f].x[e] *= scale;
    wmma::store_matrix_sync(tile + 16 * f, acc[f], ld, wmma::mem_row_major);
  }
}

// The (batch, head) of blockIdx.y: offsets of its row 0 in qkv (q; k at + c, v at + 2c), in
// out / dout, and in lse / delta.
struct HeadTc {
  int64_t qkv, out, stats;
};
__device__ inline HeadTc head_tc(int64_t t, int64_t c, int64_t nh, int hs) {
  const int64_t b = blockIdx.y / nh, h = blockIdx.y % nh;
  return {b * t * 3 * c + h * hs, b * t * c + h * hs, static_cast<int64_t>(blockIdx.y) * t};
}

// Each kernel's shared-memory tiles, cut in one order on the device and measured on the host.
template <class T>
struct ForwardTiles {
  T* qs;      // (64, hs) the block's queries
  T* ks;      // (64, hs) keys of the tile
  T* vs;      // (64, hs) values of the tile
  T* ps;      // (64, 64) probabilities, rounded
  float* ss;  // (64, 64) scores
  float* os;  // (64, hs) unnormalised output
  template <class Carver>
  __host__ __device__ ForwardTiles(Carver& cv, Strides st)
      : qs(cv.template take<T>(kRows * st.h16())),
        ks(cv.template take<T>(kCols * st.h16())),
        vs(cv.template take<T>(kCols * st.h16())),
        ps(cv.template take<T>(kRows * st.c16())),
        ss(cv.template take<float>(kRows * st.c32())),
        os(cv.template take<float>(kRows * st.h32())) {}
};

template <class T>
struct DqTiles {
  T* qs;      // (64, hs) the block's queries
  T* dos;     // (64, hs) their output gradients
  T* ks;      // (64, hs) keys of the tile
  T* vs;      // (64, hs) values of the tile
  T* dss;     // (64, 64) dS, rounded
  float* ss;  // (64, 64) scores, then dP = dO Vᵀ (64, 64) after them: one tile, which at the
              // end holds the warps' (16, hs) results (64 (hs + 4) ≤ 2 · 64 · 68 floats)
  float* dps;
  template <class Carver>
  __host__ __device__ DqTiles(Carver& cv, Strides st)
      : qs(cv.template take<T>(kRows * st.h16())),
        dos(cv.template take<T>(kRows * st.h16())),
        ks(cv.template take<T>(kCols * st.h16())),
        vs(cv.template take<T>(kCols * st.h16())),
        dss(cv.template take<T>(kRows * st.c16())),
        ss(cv.template take<float>(2 * kRows * st.c32())),
        dps(ss + kRows * st.c32()) {}
};

template <class T>
struct DkvTiles {
  T* ks;       // (64, hs) the block's keys
  T* vs;       // (64, hs) their values
  T* qs;       // (64, hs) queries of the tile
  T* dos;      // (64, hs) their output gradients
  T* pts;      // (64, 64) Pᵀ, rounded
  T* dsts;     // (64, 64) dSᵀ, rounded
  float* sts;  // (64, 64) Sᵀ, then dPᵀ = V dOᵀ (64, 64) after it: one tile, which at the
               // end holds the warps' (16, hs) dk, then dv
  float* dpts;
  float* lse_t;    // (64) the tile's queries' lse
  float* delta_t;  // (64) and D
  template <class Carver>
  __host__ __device__ DkvTiles(Carver& cv, Strides st)
      : ks(cv.template take<T>(kRows * st.h16())),
        vs(cv.template take<T>(kRows * st.h16())),
        qs(cv.template take<T>(kCols * st.h16())),
        dos(cv.template take<T>(kCols * st.h16())),
        pts(cv.template take<T>(kRows * st.c16())),
        dsts(cv.template take<T>(kRows * st.c16())),
        sts(cv.template take<float>(2 * kRows * st.c32())),
        dpts(sts + kRows * st.c32()),
        lse_t(cv.template take<float>(kCols)),
        delta_t(cv.template take<float>(kCols)) {}
};

// The score tiles hold the results at the end.
static_assert(2 * kRows * (kCols + kPad32) >= kRows * (kMaxHs + kPad32));

// Bytes of shared memory Tiles takes for head size hs.
template <class Tiles>
size_t smem_bytes(int hs) {
  SizeCarver cv;
  const Tiles tiles(cv, Strides{hs});
  (void)tiles;
  return cv.used;
}

// grid (ceil(T / 64), B · NH). out (B, T, C) of type O, lse (B, NH, T), qkv (B, T, 3C).
template <class T, class O>
__global__ void __launch_bounds__(kThreadsTc)
    forward_tc_kernel(O* out, float* lse, const float* qkv, int64_t t, int64_t c, int64_t nh,
                      int hs, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  const Strides st{hs};
  SmemCarver cv{smem};
  const auto [qs, ks, vs, ps, ss, os] = ForwardTiles<T>(cv, st);
  const HeadTc hd = head_tc(t, c, nh, hs);
  const float* q = qkv + hd.qkv;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, r = 16 * w + lane / 2, half = lane % 2;
  // The last rows see the most keys: their blocks start first, so no long block comes last.
  const int64_t i0 = (gridDim.x - 1 - blockIdx.x) * int64_t{kRows}, i = i0 + r;
  const bool idle = i0 + 16 * w >= t;  // the warp's rows are all past the end
  load_rows<1, T>({{qs, q, 3 * c}}, st.h16(), i0, kRows, t, hs);
  zero_rows(os, st.h32(), kRows, hs);
  float m = -INFINITY, l = 0.0f;  // row r's running maximum and sum
  float* srow = ss + r * st.c32() + 32 * half;
  T* prow = ps + r * st.c16() + 32 * half;
  float* orow = os + r * st.h32() + half * (hs / 2);
  const int rot = rotation(lane);
  for (int64_t j0 = 0; j0 < i0 + kRows && j0 < t; j0 += kCols) {
    __syncthreads();  // the previous tile is consumed (and qs, os are written, the first time)
    load_rows<2, T>({{ks, q + c, 3 * c}, {vs, q + 2 * c, 3 * c}}, st.h16(), j0, kCols, t, hs);
    __syncthreads();
    if (idle) continue;
    warp_gemm<true>(ss + 16 * w * st.c32(), st.c32(), qs + 16 * w * st.h16(), st.h16(), ks,
                    st.h16(), kCols, hs, false);  // S = Q Kᵀ
    __syncwarp();
    float mx = -INFINITY;
    for (int n = 0; n < 32; ++n) {
      const int k = (n + rot) % 32;
      const float s = j0 + 32 * half + k <= i ? srow[k] * scale : -INFINITY;
      srow[k] = s;
      mx = fmaxf(mx, s);
    }
    const float m_new = fmaxf(m, fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1)));
    const float correction = __expf(m - m_new);  // 0 on the first tile
    float sum = 0.0f;
    for (int n = 0; n < 32; ++n) {
      const int k = (n + rot) % 32;
      T p;
      store(p, __expf(srow[k] - m_new));
      prow[k] = p;
      sum += load(p);
    }
    l = l * correction + sum + __shfl_xor_sync(kFullMask, sum, 1);
    m = m_new;
    for (int n = 0; n < hs / 2; ++n) orow[(n + rot) % (hs / 2)] *= correction;
    __syncwarp();
    warp_gemm<false>(os + 16 * w * st.h32(), st.h32(), ps + 16 * w * st.c16(), st.c16(), vs,
                     st.h16(), hs, kCols, true);  // O += P V
    __syncwarp();
  }
  if (i >= t) return;
  O* dst = out + hd.out + i * c + half * (hs / 2);
  for (int d = 0; d < hs / 2; ++d) cuda_detail::store(dst[d], orow[d] / l);
  if (half == 0) lse[hd.stats + i] = m + logf(l);
}

// dq_i = scale · Σ_{j ≤ i} p_ij (dp_ij − D_i) k_j, rows are queries. grid (ceil(T / 64), B · NH).
// dqkv of type G.
template <class T, class G>
__global__ void __launch_bounds__(kThreadsTc)
    dq_tc_kernel(G* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta,
                 int64_t t, int64_t c, int64_t nh, int hs, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  const Strides st{hs};
  SmemCarver cv{smem};
  const auto [qs, dos, ks, vs, dss, ss, dps] = DqTiles<T>(cv, st);
  const HeadTc hd = head_tc(t, c, nh, hs);
  const float* q = qkv + hd.qkv;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, r = 16 * w + lane / 2, half = lane % 2;
  // The last rows see the most keys: their blocks start first, so no long block comes last.
  const int64_t i0 = (gridDim.x - 1 - blockIdx.x) * int64_t{kRows}, i = i0 + r;
  const bool idle = i0 + 16 * w >= t;
  load_rows<2, T>({{qs, q, 3 * c}, {dos, dout + hd.out, c}}, st.h16(), i0, kRows, t, hs);
  Accumulators dq;  // the warp's 16 rows of dq / scale
  zero(dq);
  const float lse_i = i < t ? lse[hd.stats + i] : 0.0f;
  const float delta_i = i < t ? delta[hd.stats + i] : 0.0f;
  const int off32 = 16 * w * st.c32(), rot = rotation(lane);
  for (int64_t j0 = 0; j0 < i0 + kRows && j0 < t; j0 += kCols) {
    __syncthreads();
    load_rows<2, T>({{ks, q + c, 3 * c}, {vs, q + 2 * c, 3 * c}}, st.h16(), j0, kCols, t, hs);
    __syncthreads();
    if (idle) continue;
    warp_gemm<true>(ss + off32, st.c32(), qs + 16 * w * st.h16(), st.h16(), ks, st.h16(), kCols, hs,
                    false);  // S = Q Kᵀ
    warp_gemm<true>(dps + off32, st.c32(), dos + 16 * w * st.h16(), st.h16(), vs, st.h16(), kCols,
                    hs, false);  // dP = dO Vᵀ
    __syncwarp();
    const float* srow = ss + r * st.c32() + 32 * half;
    const float* dprow = dps + r * st.c32() + 32 * half;
    T* dsrow = dss + r * st.c16() + 32 * half;
    for (int n = 0; n < 32; ++n) {
      const int k = (n + rot) % 32;
      const float p = j0 + 32 * half + k <= i ? __expf(srow[k] * scale - lse_i) : 0.0f;
      store(dsrow[k], p * (dprow[k] - delta_i));
    }
    __syncwarp();
    warp_gemm(dq, dss + 16 * w * st.c16(), st.c16(), ks, st.h16(), hs, kCols);  // dQ += dS K
    __syncwarp();
  }
  __syncthreads();  // every warp is done with the score tiles: they take the results
  float* rows = ss + 16 * w * st.h32();  // (16, hs) this warp's rows
  store_scaled(rows, st.h32(), dq, hs, scale);
  __syncwarp();
  if (i >= t) return;
  const float* acc = rows + (lane / 2) * st.h32() + half * (hs / 2);
  G* dst = dqkv + hd.qkv + i * 3 * c + half * (hs / 2);
  for (int d = 0; d < hs / 2; ++d) cuda_detail::store(dst[d], acc[d]);
}

// dv_j = Σ_{i ≥ j} p_ij dO_i;  dk_j = scale · Σ_{i ≥ j} p_ij (dp_ij − D_i) q_i. Rows are keys;
// the products are taken transposed (Sᵀ = K Qᵀ). grid (ceil(T / 64), B · NH). dqkv of type G.
template <class T, class G>
__global__ void __launch_bounds__(kThreadsTc)
    dkv_tc_kernel(G* dqkv, const float* dout, const float* qkv, const float* lse,
                  const float* delta, int64_t t, int64_t c, int64_t nh, int hs, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  const Strides st{hs};
  SmemCarver cv{smem};
  const auto [ks, vs, qs, dos, pts, dsts, sts, dpts, lse_t, delta_t] = DkvTiles<T>(cv, st);
  const HeadTc hd = head_tc(t, c, nh, hs);
  const float* q = qkv + hd.qkv;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, r = 16 * w + lane / 2, half = lane % 2;
  const int64_t j0 = blockIdx.x * int64_t{kRows}, j = j0 + r;
  const bool idle = j0 + 16 * w >= t;
  load_rows<2, T>({{ks, q + c, 3 * c}, {vs, q + 2 * c, 3 * c}}, st.h16(), j0, kRows, t, hs);
  Accumulators dk, dv;  // the warp's 16 keys' dk / scale and dv
  zero(dk);
  zero(dv);
  const int off16 = 16 * w * st.c16(), off32 = 16 * w * st.c32();
  const int rot = rotation(lane);
  for (int64_t i0 = j0; i0 < t; i0 += kCols) {
    __syncthreads();
    load_rows<2, T>({{qs, q, 3 * c}, {dos, dout + hd.out, c}}, st.h16(), i0, kCols, t, hs);
    if (threadIdx.x < kCols) {
      const int64_t i = i0 + threadIdx.x;
      lse_t[threadIdx.x] = i < t ? lse[hd.stats + i] : 0.0f;
      delta_t[threadIdx.x] = i < t ? delta[hd.stats + i] : 0.0f;
    }
    __syncthreads();
    if (idle) continue;
    warp_gemm<true>(sts + off32, st.c32(), ks + 16 * w * st.h16(), st.h16(), qs, st.h16(), kCols,
                    hs, false);  // Sᵀ = K Qᵀ
    warp_gemm<true>(dpts + off32, st.c32(), vs + 16 * w * st.h16(), st.h16(), dos, st.h16(), kCols,
                    hs, false);  // dPᵀ = V dOᵀ
    __syncwarp();
    const float* strow = sts + r * st.c32() + 32 * half;
    const float* dptrow = dpts + r * st.c32() + 32 * half;
    T* ptrow = pts + r * st.c16() + 32 * half;
    T* dstrow = dsts + r * st.c16() + 32 * half;
    for (int n = 0; n < 32; ++n) {
      const int k = (n + rot) % 32, col = 32 * half + k;
      const int64_t i = i0 + col;
      const float p = i >= j && i < t ? __expf(strow[k] * scale - lse_t[col]) : 0.0f;
      store(ptrow[k], p);
      store(dstrow[k], p * (dptrow[k] - delta_t[col]));
    }
    __syncwarp();
    warp_gemm(dv, pts + off16, st.c16(), dos, st.h16(), hs, kCols);  // dV += Pᵀ dO
    warp_gemm(dk, dsts + off16, st.c16(), qs, st.h16(), hs, kCols);  // dK += dSᵀ Q
    __syncwarp();
  }
  __syncthreads();  // every warp is done with the score tiles: they take the results
  float* rows = sts + 16 * w * st.h32();  // (16, hs) this warp's keys
  const float* acc = rows + (lane / 2) * st.h32() + half * (hs / 2);
  G* dst = dqkv + hd.qkv + j * 3 * c + c + half * (hs / 2);  // dk; dv at + c
  auto write = [&](int64_t at) {                             // the rows into dqkv at dst + at
    __syncwarp();
    if (j < t)
      for (int d = 0; d < hs / 2; ++d) cuda_detail::store(dst[at + d], acc[d]);
    __syncwarp();  // read before the rows are overwritten
  };
  store_scaled(rows, st.h32(), dk, hs, scale);
  write(0);
  store_scaled(rows, st.h32(), dv, hs, 1.0f);
  write(c);
}

// Lets `kernel` use `bytes` of shared memory, or throws Error saying the head is too large for
// this GPU.
template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes, int hs) {
  int device = 0, limit = 0;
  TS_CUDA_CHECK(cudaGetDevice(&device));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TS_CHECK(bytes <= static_cast<size_t>(limit), "16-bit attention with head size ", hs, " needs ",
           bytes, " bytes of shared memory per block, this GPU has ", limit,
           ": use train.precision: fp32 or a smaller head");
  TS_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

int check_head_tc(int64_t b, int64_t c, int64_t nh, DType compute) {
  TS_CHECK(compute == DType::bf16 || compute == DType::f16,
           "attention on the tensor cores takes bf16 or f16, not ", dtype_name(compute));
  const int64_t hs = c / nh;
  TS_CHECK(hs % 16 == 0 && hs <= kMaxHs,
           "16-bit attention takes head sizes that are multiples of 16 up to ", kMaxHs, ", got ",
           hs, ": use train.precision: fp32");
  TS_CHECK(b * nh <= 65535, "attention on CUDA takes at most 65535 (batch x heads), got ", b * nh,
           ": use a smaller train.batch_size");
  return static_cast<int>(hs);
}

// The tiles' 16-byte loads need 16-byte aligned rows (tensors from the allocator are).
void check_aligned(const float* p, const char* what) {
  TS_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, "16-bit attention reads ", what,
           " 16 bytes at a time: its data must start on a 16-byte boundary (an offset view? pass "
           "a contiguous copy)");
}

dim3 grid_tc(int64_t b, int64_t t, int64_t nh) {
  return dim3(static_cast<unsigned>((t + kRows - 1) / kRows), static_cast<unsigned>(b * nh));
}

template <class T, class O>
void forward_tc(O* out, float* lse, const float* qkv, int64_t b, int64_t t, int64_t c, int64_t nh,
                int hs, CudaStream stream) {
  const size_t smem = smem_bytes<ForwardTiles<T>>(hs);
  allow_smem(forward_tc_kernel<T, O>, smem, hs);
  forward_tc_kernel<T, O><<<grid_tc(b, t, nh), kThreadsTc, smem, stream>>>(
      out, lse, qkv, t, c, nh, hs, 1.0f / sqrtf(static_cast<float>(hs)));
  TS_CUDA_CHECK_LAUNCH();
}

template <class T, class G>
void backward_tc(G* dqkv, const float* delta, const float* dout, const float* qkv, const float* lse,
                 int64_t b, int64_t t, int64_t c, int64_t nh, int hs, CudaStream stream) {
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  const size_t dq_smem = smem_bytes<DqTiles<T>>(hs), dkv_smem = smem_bytes<DkvTiles<T>>(hs);
  allow_smem(dq_tc_kernel<T, G>, dq_smem, hs);
  dq_tc_kernel<T, G><<<grid_tc(b, t, nh), kThreadsTc, dq_smem, stream>>>(
      dqkv, dout, qkv, lse, delta, t, c, nh, hs, scale);
  TS_CUDA_CHECK_LAUNCH();
  allow_smem(dkv_tc_kernel<T, G>, dkv_smem, hs);
  dkv_tc_kernel<T, G><<<grid_tc(b, t, nh), kThreadsTc, dkv_smem, stream>>>(
      dqkv, dout, qkv, lse, delta, t, c, nh, hs, scale);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <class O>
void attention_forward_tc(O* out, float* lse, const float* qkv, int64_t b, int64_t t, int64_t c,
                          int64_t nh, DType compute, CudaStream stream) {
  const int hs = check_head_tc(b, c, nh, compute);
  if (b * t == 0) return;
  check_aligned(qkv, "qkv");
  auto* o = cuda_detail::cuda_ptr(out);
  if (compute == DType::bf16)
    forward_tc<__nv_bfloat16>(o, lse, qkv, b, t, c, nh, hs, stream);
  else
    forward_tc<__half>(o, lse, qkv, b, t, c, nh, hs, stream);
}

template <class O>
void attention_backward_tc(O* dqkv, float* delta, const float* dout, const float* qkv, const O* out,
                           const float* lse, int64_t b, int64_t t, int64_t c, int64_t nh,
                           DType compute, CudaStream stream) {
  const int hs = check_head_tc(b, c, nh, compute);
  if (b * t == 0) return;
  check_aligned(qkv, "qkv");
  check_aligned(dout, "dout");
  attention_delta(delta, dout, out, b, t, c, nh, stream);
  auto* dx = cuda_detail::cuda_ptr(dqkv);
  if (compute == DType::bf16)
    backward_tc<__nv_bfloat16>(dx, delta, dout, qkv, lse, b, t, c, nh, hs, stream);
  else
    backward_tc<__half>(dx, delta, dout, qkv, lse, b, t, c, nh, hs, stream);
}

template void attention_forward_tc(float*, float*, const float*, int64_t, int64_t, int64_t, int64_t,
                                   DType, CudaStream);
template void attention_forward_tc(bf16*, float*, const float*, int64_t, int64_t, int64_t, int64_t,
                                   DType, CudaStream);
template void attention_forward_tc(f16*, float*, const float*, int64_t, int64_t, int64_t, int64_t,
                                   DType, CudaStream);
template void attention_backward_tc(float*, float*, const float*, const float*, const float*,
                                    const float*, int64_t, int64_t, int64_t, int64_t, DType,
                                    CudaStream);
template void attention_backward_tc(bf16*, float*, const float*, const float*, const bf16*,
                                    const float*, int64_t, int64_t, int64_t, int64_t, DType,
                                    CudaStream);
template void attention_backward_tc(f16*, float*, const float*, const float*, const f16*,
                                    const float*, int64_t, int64_t, int64_t, int64_t, DType,
                                    CudaStream);

}  // namespace tessera::cuda
