// Causal attention on the tensor cores (kernels/attention.h, the 16-bit launchers), in the manner
// of FlashAttention-2: every product an mma.sync m16n8k16 of bf16 (or fp16) operands into fp32
// registers, scores and probabilities never leave the registers, no T×T matrix anywhere. q, k, v
// and dout come in 16 bits (kernels/attention.cpp rounds f32 ones first) and are copied to
// shared memory as they are; softmax statistics, lse, D and every accumulator are fp32. P and dS
// are rounded to 16 bits before their products (the forward's row sums are taken from the rounded
// P), as the CPU emulates. The softmax's per-element work is kept to an FFMA and one ex2 (no range
// fix-up), a conversion per pair and, only on tiles that hold masked elements, the mask's test.
//
// A block of warps takes 16 or 32 rows each (one or two m-tiles) of one (batch, head) against
// 64-row tiles of the other side staged in shared memory. Fragment layouts are the PTX ISA's
// ("Matrix fragments for mma.m16n8k16"): lane 4g + q holds accumulator rows g and g + 8 of its
// warp, columns 2q and 2q + 1 of each 8-column block; an accumulator block pair, rounded, is the A
// fragment of the next product, so P and dS go from one mma to the next without shared memory.
// Backward recomputes P from the saved lse: a kernel for dk and dv (rows are keys) that also makes
// dq up to head size 64 (its key tiles adding their shares in a fixed turn), else one for dq (rows
// are queries); every sum in a fixed order: deterministic. Tiles start
// on multiples of 64 on both sides and a warp skips the tiles none of its rows sees, so every tile
// it works on holds a column each of its rows sees: no row's maximum is −∞.
//
// The kernels only: kernels/attention_tc.cu launches them (and the CPU emulation test includes
// them), so they stay in an unnamed namespace.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/cuda_util.cuh"
#ifndef TESSERA_SIMT_EMULATION  // else tests/support/simt.h has defined the primitives
#include "kernels/tensor_core.cuh"
#endif

namespace tessera::cuda {
namespace {

using cuda_detail::store;
using tc::commit_copies;
using tc::copy16_async;
using tc::exp2_approx;
using tc::ldmatrix_x4;
using tc::mma;
using tc::pack_rounded;
using tc::pass_turn;
using tc::wait_copies;
using tc::wait_turn;

// A warp takes M m-tiles of 16 rows of the block's own side: each fragment of the other side's
// tile it loads from shared memory feeds M products (FlashAttention-2's 32 rows a warp at M = 2,
// which halves the shared-memory reads per product and gives each warp two independent chains).
// The forward's blocks take 128 queries (each k, v tile shared by all of them) as 128 / (16 M)
// warps: by default M = 2 at head size 64 and less (4 warps of 32 rows), M = 1 at 128 (whose
// 32-row accumulators would not fit the registers: 8 warps of 16); bench/attention_cuda.cu times
// both at 64. dq and dk/dv hold three or four 16 × 64 tiles of fp32 a row tile, so one
// m-tile a warp, 4 warps a block; 55 KB (head size 64) or 105 KB (128) of two-stage tiles: on an
// H100 (228 KB a multiprocessor) up to four or two blocks by shared memory, on an A100 (164 KB)
// two or one.
constexpr int kForwardRows = 128;
template <int HS>
constexpr int kForwardTilesM = HS <= 64 ? 2 : 1;
template <int M>
constexpr int kForwardWarps = kForwardRows / (16 * M);
constexpr int kBackwardTilesM = 1;
constexpr int kBackwardWarps = 4;
constexpr int kBackwardRows = 16 * kBackwardTilesM * kBackwardWarps;
// Whether the dk/dv kernel also makes dq (FlashAttention-2's five products instead of the dq
// kernel's recomputing S and dP: seven), each key tile adding its share to a query tile in turn,
// highest key tile first: deterministic. Up to head size 64 (attention.h's attention_dq_in_dkv):
// at 128 the kernel's registers are already all used. Not yet measured on a GPU (docs/cuda.md:
// bench/attention_cuda.cu times both).
template <int HS>
constexpr bool kDqInDkv = attention_dq_in_dkv(HS);
constexpr int kCols = 64;  // rows of the other side per tile
constexpr int kPad = 8;    // row padding of the tiles, in elements: 16-byte rows, no bank conflicts
constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xffffffffu;

// The tiles' row stride for head size HS.
template <int HS>
constexpr int kLd = HS + kPad;

// The two values of a pack_rounded pair, exactly, lo first.
template <class T>
__device__ inline float2 unpack(uint32_t v) {
  return {cuda_detail::from_bits<T>(v & 0xffffu), cuda_detail::from_bits<T>(v >> 16)};
}

// The A operand of warp_scores, m-tile mi's fragment of columns k0..k0+15 (rows 0-7 | 8-15 of
// columns k0..k0+7, then of k0+8..k0+15) of the warp's (16 M, HS) rows: loaded from shared memory
// where it is used...
template <int HS, class T>
struct RowsInShared {
  const T* rows;  // the warp's first row
  __device__ void operator()(uint32_t (&f)[4], int mi, int k0) const {
    const int lane = threadIdx.x % 32;
    ldmatrix_x4<false>(f, rows + (16 * mi + lane % 16) * kLd<HS> + k0 + 8 * (lane / 16));
  }
};
// ... or loaded once and held in registers (the forward's q rows, the same for every key tile).
template <int HS, int M>
struct RowsInRegisters {
  uint32_t held[M][HS / 16][4];
  template <class T>
  __device__ void load(const T* rows) {
#pragma unroll
    for (int mi = 0; mi < M; ++mi)
#pragma unroll
      for (int k0 = 0; k0 < HS; k0 += 16) RowsInShared<HS, T>{rows}(held[mi][k0 / 16], mi, k0);
  }
  __device__ void operator()(uint32_t (&f)[4], int mi, int k0) const {
#pragma unroll
    for (int r = 0; r < 4; ++r) f[r] = held[mi][k0 / 16][r];
  }
};

// One warp: s[mi] (16 × 64, 8-column block nb in s[mi][nb]) = a_mi · bᵀ for its M 16-row tiles
// (a_mi: rows 16 mi.. of the warp's (16 M, HS) rows, fragments from `a`: RowsInShared or
// RowsInRegisters) and b (64, HS), a row-major tile in shared memory; each fragment of b is
// loaded once for the M products.
template <int HS, int M, class T, class A>
__device__ void warp_scores(float (&s)[M][8][4], const A& a, const T* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int mi = 0; mi < M; ++mi)
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) s[mi][nb][0] = s[mi][nb][1] = s[mi][nb][2] = s[mi][nb][3] = 0.0f;
#pragma unroll
  for (int k0 = 0; k0 < HS; k0 += 16) {
    uint32_t fa[M][4];
#pragma unroll
    for (int mi = 0; mi < M; ++mi) a(fa[mi], mi, k0);
#pragma unroll
    for (int n0 = 0; n0 < 64; n0 += 16) {
      uint32_t fb[4];  // b rows n0..n0+7: columns k0.., k0+8..; rows n0+8..n0+15: the same
      ldmatrix_x4<false>(fb,
                         b + (n0 + lane % 8 + 8 * (lane / 16)) * kLd<HS> + k0 + 8 * (lane / 8 % 2));
#pragma unroll
      for (int mi = 0; mi < M; ++mi) {
        mma<T>(s[mi][n0 / 8], fa[mi], fb[0], fb[1]);
        mma<T>(s[mi][n0 / 8 + 1], fa[mi], fb[2], fb[3]);
      }
    }
  }
}

// One warp: acc[mi] (16 × HS) += p[mi] · b for its M 16-row tiles; p[mi] (16 × 64) as A fragments
// (to_a_fragments), b (64, HS) row-major in shared memory, each fragment loaded once for the M.
template <int HS, int M, class T>
__device__ void warp_accumulate(float (&acc)[M][HS / 8][4], const uint32_t (&p)[M][4][4],
                                const T* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int k0 = 0; k0 < 64; k0 += 16)
#pragma unroll
    for (int n0 = 0; n0 < HS; n0 += 16) {
      uint32_t fb[4];  // transposed: b rows k0.., k0+8.. of columns n0..n0+7, then of n0+8..
      ldmatrix_x4<true>(fb,
                        b + (k0 + lane % 8 + 8 * (lane / 8 % 2)) * kLd<HS> + n0 + 8 * (lane / 16));
#pragma unroll
      for (int mi = 0; mi < M; ++mi) {
        mma<T>(acc[mi][n0 / 8], p[mi][k0 / 16], fb[0], fb[1]);
        mma<T>(acc[mi][n0 / 8 + 1], p[mi][k0 / 16], fb[2], fb[3]);
      }
    }
}

// A (16 × 64) operand from values in accumulator layout, rounded to T: the A fragment of 16
// columns k0 holds blocks k0 / 8 and k0 / 8 + 1; a[kk][r] holds row g for even r, g + 8 for odd.
template <class T>
__device__ inline void to_a_fragments(uint32_t (&a)[4][4], const float (&x)[8][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      a[kk][2 * h] = pack_rounded<T>(x[2 * kk + h][0], x[2 * kk + h][1]);      // row g
      a[kk][2 * h + 1] = pack_rounded<T>(x[2 * kk + h][2], x[2 * kk + h][3]);  // row g + 8
    }
}

// A (rows, HS) tile to fill from rows of a 16-bit tensor: row i of the source at src + i * ld.
template <class T>
struct RowSource {
  T* tile;
  const T* src;
  int64_t ld;
};

// Starts the copies of each source's rows [first, first + rows) into its tile (row stride
// kLd<HS>), zeros past t; the whole block (kThreads threads) takes part, 16 bytes a copy (launchers
// check the alignment). They have landed for the block after commit_copies, wait_copies and a
// __syncthreads.
template <int kThreads, int kTiles, int HS, class T>
__device__ void copy_rows_async(const RowSource<T> (&tiles)[kTiles], int64_t first, int rows,
                                int64_t t) {
  constexpr int kPerRow = HS * sizeof(T) / 16;
  for (int e = threadIdx.x; e < rows * kPerRow; e += kThreads) {
    const int r = e / kPerRow, d = e % kPerRow * 16 / sizeof(T);
    const bool in = first + r < t;
#pragma unroll
    for (int s = 0; s < kTiles; ++s)
      copy16_async(tiles[s].tile + r * kLd<HS> + d,
                   tiles[s].src + (in ? (first + r) * tiles[s].ld + d : 0), in);
  }
}

// Starts the copies of one head's k and v rows [j0, j0 + kCols) (k at head + c, v at head + 2c,
// rows 3c apart) into stage `stage` of kvs (its k tile, then its v tile), as one group.
template <int kThreads, int HS, class T>
__device__ void copy_kv_async(T* kvs, const T* head, int64_t c, int64_t j0, int stage, int64_t t) {
  constexpr int kTile = kCols * kLd<HS>;
  T* k_tile = kvs + 2 * stage * kTile;
  copy_rows_async<kThreads, 2, HS, T>(
      {{k_tile, head + c, 3 * c}, {k_tile + kTile, head + 2 * c, 3 * c}}, j0, kCols, t);
  commit_copies();
}

// Waits until the current stage's tiles have landed for the whole block; when the next stage's
// copies were started (next_started), their group stays in flight.
__device__ inline void await_stage(bool next_started) {
  if (next_started)
    wait_copies<1>();
  else
    wait_copies<0>();
  __syncthreads();
}

// Sum (or max) over the 4 lanes that hold one accumulator row.
__device__ inline float quad_sum(float x) {
  x += __shfl_xor_sync(kFullMask, x, 1);
  return x + __shfl_xor_sync(kFullMask, x, 2);
}
__device__ inline float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullMask, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFullMask, x, 2));
}

// Sets to −∞ (exp2: 0) the elements of a warp's 16 × 64 tile of scores (accumulator layout, lane
// (g, q)) for which drop(column, row) holds, both counted in the tile from the warp's first row.
// Only tiles that hold such elements call it: the test costs as much as the rest of the softmax.
template <class Drop>
__device__ inline void mask_scores(float (&s)[8][4], int g, int q, Drop drop) {
#pragma unroll
  for (int nb = 0; nb < 8; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (drop(8 * nb + 2 * q + e % 2, g + 8 * (e / 2))) s[nb][e] = -INFINITY;
}

// The causal mask on m-tile mi of a warp whose rows start at `first`, against the 64 columns from
// j0: tested only where some column is past some row.
__device__ inline void mask_causal(float (&s)[8][4], int64_t j0, int64_t first, int mi, int g,
                                   int q) {
  const int dj = static_cast<int>(j0 - first) - 16 * mi;  // column 0 less the m-tile's row 0
  if (dj + kCols > 1) mask_scores(s, g, q, [dj](int col, int row) { return dj + col > row; });
}

// The warp's rows of acc (16 × HS, accumulator layout) times `scale` into dst (row i at dst + i *
// ld, of type D), rows from `first`, none at or past t.
template <int HS, class D>
__device__ void write_rows(D* dst, int64_t ld, const float (&acc)[HS / 8][4], int64_t first,
                           int64_t t, float scale0, float scale1) {
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
#pragma unroll
  for (int nb = 0; nb < HS / 8; ++nb)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t i = first + g + 8 * h;
      if (i >= t) continue;
      const float scale = h ? scale1 : scale0;
      D* out = dst + i * ld + 8 * nb + 2 * q;
      store(out[0], acc[nb][2 * h] * scale);
      store(out[1], acc[nb][2 * h + 1] * scale);
    }
}

// (batch, head) bh = b · NH + h: offsets of its row 0 in qkv (q; k at + c, v at + 2c), in out /
// dout, and in lse / delta.
struct HeadTc {
  int64_t qkv, out, stats;
};
__device__ inline HeadTc head_tc(int64_t bh, int64_t t, int64_t c, int64_t nh, int hs) {
  const int64_t b = bh / nh, h = bh % nh;
  return {b * t * 3 * c + h * hs, b * t * c + h * hs, bh * t};
}

// One step of the online softmax for a 16-row m-tile (lane rows g, g + 8) against a 64-column
// tile: s, its scores (unscaled; masked ones −∞), becomes P = exp2(scale2 · s − m) rounded to T as
// A fragments in pa; m (the running maximum, scaled: log2 units), l (the running sum of the rounded
// P, as P·V sees it) and o (the running output) move to the new maximum.
template <int HS, class T>
__device__ void online_softmax(uint32_t (&pa)[4][4], float (&s)[8][4], float (&m)[2], float (&l)[2],
                               float (&o)[HS / 8][4], float scale2) {
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nb = 0; nb < 8; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) mx[e / 2] = fmaxf(mx[e / 2], s[nb][e]);
  float correction[2], sum[2] = {0.0f, 0.0f}, base[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // the scaled maximum: scaling by scale2 > 0 keeps the order
    const float m_new = fmaxf(m[h], quad_max(mx[h]) * scale2);
    // The exponents' base: 0 while a row has seen no column (never, with causal tiles from 0),
    // so that −∞ − −∞ makes no NaN.
    base[h] = m_new == -INFINITY ? 0.0f : m_new;
    correction[h] = exp2_approx(m[h] - base[h]);  // 0 on the first tile
    m[h] = m_new;
  }
#pragma unroll
  for (int nb = 0; nb < 8; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nb][e] = exp2_approx(fmaf(s[nb][e], scale2, -base[e / 2]));
  to_a_fragments<T>(pa, s);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r) {  // row g for even r, g + 8 for odd
      const float2 p = unpack<T>(pa[kk][r]);
      sum[r % 2] += p.x + p.y;
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) l[h] = l[h] * correction[h] + quad_sum(sum[h]);
#pragma unroll
  for (int nb = 0; nb < HS / 8; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nb][e] *= correction[e / 2];
}

// grid (ceil(T / kForwardRows), B · NH), 32 · kForwardWarps<M> threads, M m-tiles a warp. out (B,
// T, C) of type O, lse (B, NH, T), qkv (B, T, 3C) of type T. Dynamic shared memory: the q tile,
// then two stages of k and v tiles.
template <int HS, int M, class T, class O>
__global__ void __launch_bounds__(32 * kForwardWarps<M>)
    forward_tc_kernel(O* out, float* lse, const T* qkv, int64_t t, int64_t c, int64_t nh,
                      float scale) {
  constexpr int kRows = kForwardRows, kThreads = 32 * kForwardWarps<M>;
  constexpr int kTile = kCols * kLd<HS>;  // elements of a k or v tile
  TS_DYNAMIC_SHARED(unsigned char, smem);
  T* qs = reinterpret_cast<T*>(smem);
  T* kvs = qs + kRows * kLd<HS>;  // stage s: k tile at kvs + 2 s kTile, its v tile after it
  const HeadTc hd = head_tc(blockIdx.y, t, c, nh, HS);
  const T* q = qkv + hd.qkv;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, qd = lane % 4;
  // The last rows see the most keys: their blocks start first, so no long block comes last.
  const int64_t i0 = (gridDim.x - 1 - blockIdx.x) * int64_t{kRows}, first = i0 + 16 * M * w;
  const int64_t end = i0 + kRows < t ? i0 + kRows : t;  // the block's rows see keys [0, end)
  const bool idle = first >= t;                         // the warp's rows are all past the end
  const float scale2 = scale * kLog2e;                  // scores in log2 units: exp2 of them
  copy_rows_async<kThreads, 1, HS, T>({{qs, q, 3 * c}}, i0, kRows, t);
  copy_kv_async<kThreads, HS>(kvs, q, c, 0, 0, t);  // one group with the q tile
  float o[M][HS / 8][4] = {};
  float m[M][2], l[M][2];         // m-tile mi's rows g, g + 8: maximum, sum
  RowsInRegisters<HS, M> q_rows;  // the warp's q fragments, loaded once
#pragma unroll
  for (int mi = 0; mi < M; ++mi) {
    m[mi][0] = m[mi][1] = -INFINITY;
    l[mi][0] = l[mi][1] = 0.0f;
  }
  int stage = 0;
  for (int64_t j0 = 0; j0 < end; j0 += kCols, stage ^= 1) {
    const bool next = j0 + kCols < end;
    if (next) copy_kv_async<kThreads, HS>(kvs, q, c, j0 + kCols, stage ^ 1, t);  // the last one's
    await_stage(next);  // this stage's tiles (and q) have landed for every thread
    const T* ks = kvs + 2 * stage * kTile;
    const T* vs = ks + kTile;
    // Some row of the warp sees this tile; then every row does (j0 ≤ first: both are multiples of
    // 16 M and j0 of 64).
    if (!idle && j0 < first + 16 * M) {
      if (j0 == 0) q_rows.load(qs + 16 * M * w * kLd<HS>);  // every warp sees the first tile
      float s[M][8][4];
      warp_scores<HS>(s, q_rows, ks);  // S = Q Kᵀ, unscaled
      uint32_t pa[M][4][4];
#pragma unroll
      for (int mi = 0; mi < M; ++mi) {
        mask_causal(s[mi], j0, first, mi, g, qd);
        online_softmax<HS, T>(pa[mi], s[mi], m[mi], l[mi], o[mi], scale2);
      }
      warp_accumulate<HS>(o, pa, vs);  // O += P V
    }
    __syncthreads();  // the stage is consumed before the next iteration's copies refill it
  }
  if (idle) return;
#pragma unroll
  for (int mi = 0; mi < M; ++mi) {
    const int64_t row0 = first + 16 * mi;
    write_rows<HS>(out + hd.out, c, o[mi], row0, t, 1.0f / l[mi][0], 1.0f / l[mi][1]);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t i = row0 + g + 8 * h;
      if (qd == 0 && i < t) lse[hd.stats + i] = (m[mi][h] + log2f(l[mi][h])) / kLog2e;
    }
  }
}

// Eight consecutive values from p (16-byte aligned) as fp32: one 16-byte load of a 16-bit type,
// two of f32.
template <class T>
__device__ inline void load8(float (&v)[8], const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 lo = reinterpret_cast<const float4*>(p)[0];
    const float4 hi = reinterpret_cast<const float4*>(p)[1];
    v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w;
    v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
  } else {
    const uint4 r = *reinterpret_cast<const uint4*>(p);
    const uint32_t pairs[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = unpack<T>(pairs[k]);
      v[2 * k] = f.x;
      v[2 * k + 1] = f.y;
    }
  }
}

constexpr int kDeltaThreads = 256;

// delta (B, NH, T) = Σ_d dout · out over each head's row: HS / 8 threads a row, eight values of
// each a thread. Rows taken in memory order, (b, i, h) of `rows` = B · T · NH: row r of dout (of
// type T) and out (O) is at r · HS. grid ceil(rows · HS / 8 / kDeltaThreads).
template <int HS, class T, class O>
__global__ void __launch_bounds__(kDeltaThreads)
    delta_tc_kernel(float* delta, const T* dout, const O* out, int64_t rows, int64_t t,
                    int64_t nh) {
  constexpr int kLanes = HS / 8;  // a power of two, at most 16: a row's threads share a warp
  const int64_t first = (blockIdx.x * int64_t{kDeltaThreads} + threadIdx.x) * 8;
  const int64_t r = first / HS;
  const bool in = r < rows;  // no thread returns early: its row's threads shuffle together
  float d[8] = {}, o[8] = {};
  if (in) {
    load8(d, dout + first);
    load8(o, out + first);
  }
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < 8; ++k) s = fmaf(d[k], o[k], s);
#pragma unroll
  for (int lanes = kLanes / 2; lanes > 0; lanes /= 2) s += __shfl_xor_sync(kFullMask, s, lanes);
  if (in && threadIdx.x % kLanes == 0) {
    const int64_t h = r % nh, i = r / nh % t, b = r / nh / t;
    delta[(b * nh + h) * t + i] = s;
  }
}

// dq_i = scale · Σ_{j ≤ i} p_ij (dp_ij − D_i) k_j, rows are queries. grid (ceil(T /
// kBackwardRows), B · NH). dqkv of type G, dout and qkv of type T. Dynamic shared memory: q and
// dout tiles, then two stages of k and v tiles.
template <int HS, class T, class G>
__global__ void __launch_bounds__(32 * kBackwardWarps)
    dq_tc_kernel(G* dqkv, const T* dout, const T* qkv, const float* lse, const float* delta,
                 int64_t t, int64_t c, int64_t nh, float scale) {
  constexpr int M = kBackwardTilesM, kRows = kBackwardRows, kThreads = 32 * kBackwardWarps;
  constexpr int kTile = kCols * kLd<HS>;
  TS_DYNAMIC_SHARED(unsigned char, smem);
  T* qs = reinterpret_cast<T*>(smem);
  T* dos = qs + kRows * kLd<HS>;
  T* kvs = dos + kRows * kLd<HS>;  // stage s: k tile at kvs + 2 s kTile, its v tile after it
  const HeadTc hd = head_tc(blockIdx.y, t, c, nh, HS);
  const T* q = qkv + hd.qkv;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, qd = lane % 4;
  const int64_t i0 = (gridDim.x - 1 - blockIdx.x) * int64_t{kRows}, first = i0 + 16 * M * w;
  const int64_t end = i0 + kRows < t ? i0 + kRows : t;
  const bool idle = first >= t;
  const float scale2 = scale * kLog2e;
  copy_rows_async<kThreads, 2, HS, T>({{qs, q, 3 * c}, {dos, dout + hd.out, c}}, i0, kRows, t);
  copy_kv_async<kThreads, HS>(kvs, q, c, 0, 0, t);  // one group with the q and dout tiles
  float lse2[M][2], delta_i[M][2];  // m-tile mi's rows g, g + 8: lse in log2 units, D
#pragma unroll
  for (int mi = 0; mi < M; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t i = first + 16 * mi + g + 8 * h;
      lse2[mi][h] = i < t ? lse[hd.stats + i] * kLog2e : 0.0f;
      delta_i[mi][h] = i < t ? delta[hd.stats + i] : 0.0f;
    }
  float dq[M][HS / 8][4] = {};  // dq / scale
  int stage = 0;
  for (int64_t j0 = 0; j0 < end; j0 += kCols, stage ^= 1) {
    const bool next = j0 + kCols < end;
    if (next) copy_kv_async<kThreads, HS>(kvs, q, c, j0 + kCols, stage ^ 1, t);
    await_stage(next);
    const T* ks = kvs + 2 * stage * kTile;
    const T* vs = ks + kTile;
    if (!idle && j0 < first + 16 * M) {  // some row of the warp sees this tile
      float s[M][8][4], dp[M][8][4];
      warp_scores<HS>(s, RowsInShared<HS, T>{qs + 16 * M * w * kLd<HS>}, ks);    // S = Q Kᵀ
      warp_scores<HS>(dp, RowsInShared<HS, T>{dos + 16 * M * w * kLd<HS>}, vs);  // dP = dO Vᵀ
      uint32_t dsa[M][4][4];
#pragma unroll
      for (int mi = 0; mi < M; ++mi) {
        mask_causal(s[mi], j0, first, mi, g, qd);
#pragma unroll
        for (int nb = 0; nb < 8; ++nb)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float p = exp2_approx(fmaf(s[mi][nb][e], scale2, -lse2[mi][e / 2]));
            s[mi][nb][e] = p * (dp[mi][nb][e] - delta_i[mi][e / 2]);  // dS
          }
        to_a_fragments<T>(dsa[mi], s[mi]);
      }
      warp_accumulate<HS>(dq, dsa, ks);  // dQ += dS K
    }
    __syncthreads();
  }
  if (idle) return;
#pragma unroll
  for (int mi = 0; mi < M; ++mi)
    write_rows<HS>(dqkv + hd.qkv, 3 * c, dq[mi], first + 16 * mi, t, scale, scale);
}

// The row stride of the dk/dv kernel's dSᵀ tile (kRows keys × kCols queries of T).
constexpr int kLdS = kCols + kPad;

// A warp's 16 rows of dSᵀ (A fragments, to_a_fragments' layout) into the dSᵀ tile at rows 16 w...
__device__ inline void store_ds_rows(void* ds_tile, const uint32_t (&a)[4][4], int w, int g,
                                     int qd) {
  auto* rows = static_cast<uint32_t*>(ds_tile);  // pairs: row stride kLdS / 2
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r)  // row g + 8 (r % 2), columns 16 kk + 8 (r / 2) + 2 qd, + 1
      rows[(16 * w + g + 8 * (r % 2)) * (kLdS / 2) + 8 * kk + 4 * (r / 2) + qd] = a[kk][r];
}

// 64-row tiles of a sequence of t.
__device__ inline int64_t query_tiles(int64_t t) {
  return (t + kCols - 1) / kCols;
}

// Query tile [i0, i0 + kCols)'s share of dq from the dk/dv kernel's block (keys [j0, j0 + kRows)):
// dq_i += Σ_j dS_ij k_j, dSᵀ in shared memory (rows keys, row stride kLdS), ks the key tile; warp
// w takes queries i0 + 16 w... The key tiles add their shares to dq_accum (fp32, (B, T, C)) in
// turn, highest first (turns: a count per (batch · head bh, query tile), 0 at the launch): the
// first stores, the others add in place (reductions in L2: no load on the hand-off's path), the
// last (key tile 0) adds its share to what it loads and writes dq · scale into dq_out's q columns
// (dqkv, (B, T, 3C) of type G). Deterministic: the order never changes.
template <int HS, class T, class G>
__device__ void add_dq_share(G* dq_out, float* dq_accum, int* turns, const T* ds_tile, const T* ks,
                             int64_t bh, int64_t i0, int64_t j0, int64_t t, int64_t nh,
                             float scale) {
  static_assert(kBackwardTilesM == 1 && kBackwardRows == kCols && kBackwardWarps * 16 == kCols);
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, qd = lane % 4;
  uint32_t ds[1][4][4];  // A fragments of dS (16 queries × the 64 keys), from dSᵀ transposed
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    ldmatrix_x4<true>(ds[0][kk], ds_tile + (16 * kk + 8 * (lane / 16) + lane % 8) * kLdS + 16 * w +
                                     8 * (lane / 8 % 2));
  float share[1][HS / 8][4] = {};
  warp_accumulate<HS>(share, ds, ks);  // dS K
  const int query_tile = static_cast<int>(i0 / kCols), key_tile = static_cast<int>(j0 / kCols);
  int* turn = turns + bh * query_tiles(t) + query_tile;
  if (threadIdx.x == 0) wait_turn(turn, query_tile - key_tile);  // the key tiles above have added
  __syncthreads();
  const bool first = key_tile == query_tile, last = key_tile == 0;
  // (b, h) again from bh rather than the kernel's HeadTc: keeping its offsets live through the
  // tile loop cost 60 registers (230 instead of 167 at head size 64, one block a multiprocessor
  // fewer).
  const int64_t b = bh / nh, h = bh % nh, c = nh * HS;
#pragma unroll
  for (int nb = 0; nb < HS / 8; ++nb)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t i = i0 + 16 * w + g + 8 * r;
      if (i >= t) continue;
      const int64_t d = h * HS + 8 * nb + 2 * qd;  // column in the head's C
      float2 v = {share[0][nb][2 * r], share[0][nb][2 * r + 1]};
      float* acc = dq_accum + (b * t + i) * c + d;
      if (first && !last) {
        *reinterpret_cast<float2*>(acc) = v;
        continue;
      }
      if (!first && !last) {  // added where it is (atomic in form only: the turn orders them)
        atomicAdd(acc, v.x);
        atomicAdd(acc + 1, v.y);
        continue;
      }
      if (!first) {  // the last of several: the sum so far, from L2 (other blocks wrote it)
        const float2 before = __ldcg(reinterpret_cast<const float2*>(acc));
        v = {before.x + v.x, before.y + v.y};
      }
      G* out = dq_out + (b * t + i) * 3 * c + d;
      store(out[0], v.x * scale);
      store(out[1], v.y * scale);
    }
  __syncthreads();  // every share stored before the turn passes
  if (threadIdx.x == 0 && !last) pass_turn(turn, query_tile - key_tile + 1);
}

// dv_j = Σ_{i ≥ j} p_ij dO_i;  dk_j = scale · Σ_{i ≥ j} p_ij (dp_ij − D_i) q_i. Rows are keys;
// the products are taken transposed (Sᵀ = K Qᵀ). grid (ceil(T / kBackwardRows), B · NH). dqkv of
// type G, dout and qkv of type T. Dynamic shared memory: k and v tiles, two stages of q and dout
// tiles, two stages of the query tile's lse and D, then (kDq) the dSᵀ tile. With kDq the kernel
// also makes dq (add_dq_share: dq_accum, turns), its blocks taking the highest key tiles first.
template <int HS, class T, class G, bool kDq>
__global__ void __launch_bounds__(32 * kBackwardWarps)
    dkv_tc_kernel(G* dqkv, float* dq_accum, int* turns, const T* dout, const T* qkv,
                  const float* lse, const float* delta, int64_t t, int64_t c, int64_t nh,
                  float scale) {
  constexpr int M = kBackwardTilesM, kRows = kBackwardRows, kThreads = 32 * kBackwardWarps;
  constexpr int kTile = kCols * kLd<HS>;
  TS_DYNAMIC_SHARED(unsigned char, smem);
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + kRows * kLd<HS>;
  T* qdos = vs + kRows * kLd<HS>;  // stage s: q tile at qdos + 2 s kTile, its dout tile after it
  float* stats = reinterpret_cast<float*>(qdos + 4 * kTile);  // stage s: lse2, D at + 2 s kCols
  T* ds_tile = reinterpret_cast<T*>(stats + 4 * kCols);       // dSᵀ (kDq)
  // With kDq a key tile adds its dq after the tiles above it, so blocks take their (key tile,
  // head) in the order they start, from a ticket, highest key tile first: a block only ever waits
  // for blocks that have started, whatever order the GPU starts them in.
  int64_t key_tile = blockIdx.x, bh = blockIdx.y;
  if constexpr (kDq) {
    __shared__ int ticket;
    if (threadIdx.x == 0) ticket = atomicAdd(turns + gridDim.y * query_tiles(t), 1);
    __syncthreads();
    key_tile = gridDim.x - 1 - ticket % gridDim.x;
    bh = ticket / gridDim.x;
  }
  const HeadTc hd = head_tc(bh, t, c, nh, HS);
  const T* q = qkv + hd.qkv;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, qd = lane % 4;
  const int64_t j0 = key_tile * kRows, first = j0 + 16 * M * w;
  const bool idle = first >= t;
  const float scale2 = scale * kLog2e;
  auto copy_q_dout = [&](int64_t i0, int stage) {
    T* q_tile = qdos + 2 * stage * kTile;
    copy_rows_async<kThreads, 2, HS, T>({{q_tile, q, 3 * c}, {q_tile + kTile, dout + hd.out, c}},
                                        i0, kCols, t);
    commit_copies();
    if (threadIdx.x < kCols) {  // plain stores: seen after the __syncthreads that follows the wait
      const int64_t i = i0 + threadIdx.x;
      float* st = stats + 2 * stage * kCols;
      st[threadIdx.x] = i < t ? lse[hd.stats + i] * kLog2e : 0.0f;
      st[kCols + threadIdx.x] = i < t ? delta[hd.stats + i] : 0.0f;
    }
  };
  copy_rows_async<kThreads, 2, HS, T>({{ks, q + c, 3 * c}, {vs, q + 2 * c, 3 * c}}, j0, kRows, t);
  copy_q_dout(j0, 0);
  float dk[M][HS / 8][4] = {}, dv[M][HS / 8][4] = {};  // dk / scale, dv
  int stage = 0;
  for (int64_t i0 = j0; i0 < t; i0 += kCols, stage ^= 1) {
    const bool next = i0 + kCols < t;
    if (next) copy_q_dout(i0 + kCols, stage ^ 1);
    await_stage(next);
    const T* qs = qdos + 2 * stage * kTile;
    const T* dos = qs + kTile;
    const float* lse2_t = stats + 2 * stage * kCols;  // log2 units
    const float* delta_t = lse2_t + kCols;
    if (!idle && i0 + kCols > first) {  // some key of the warp is seen by this tile
      float s[M][8][4];
      warp_scores<HS>(s, RowsInShared<HS, T>{ks + 16 * M * w * kLd<HS>}, qs);  // Sᵀ = K Qᵀ
      const int left = static_cast<int>(t - i0 < kCols ? t - i0 : kCols);      // columns before t
      uint32_t pa[M][4][4];
#pragma unroll
      for (int mi = 0; mi < M; ++mi) {
        const int di = static_cast<int>(i0 - first) - 16 * mi;  // column 0 less the tile's row 0
        if (di < 15 || left < kCols)  // some column (a query) is before some row (a key), or past t
          mask_scores(s[mi], g, qd,
                      [di, left](int col, int row) { return di + col < row || col >= left; });
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
          const float2 l2 = *reinterpret_cast<const float2*>(lse2_t + 8 * nb + 2 * qd);
#pragma unroll
          for (int e = 0; e < 4; ++e)
            s[mi][nb][e] = exp2_approx(fmaf(s[mi][nb][e], scale2, -(e % 2 ? l2.y : l2.x)));  // Pᵀ
        }
        to_a_fragments<T>(pa[mi], s[mi]);
      }
      warp_accumulate<HS>(dv, pa, dos);  // dV += Pᵀ dO
      float dp[M][8][4];
      warp_scores<HS>(dp, RowsInShared<HS, T>{vs + 16 * M * w * kLd<HS>}, dos);  // dPᵀ = V dOᵀ
#pragma unroll
      for (int mi = 0; mi < M; ++mi) {
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
          const float2 d2 = *reinterpret_cast<const float2*>(delta_t + 8 * nb + 2 * qd);
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mi][nb][e] *= dp[mi][nb][e] - (e % 2 ? d2.y : d2.x);  // dSᵀ
        }
        to_a_fragments<T>(pa[mi], s[mi]);
      }
      warp_accumulate<HS>(dk, pa, qs);  // dK += dSᵀ Q
      if constexpr (kDq) store_ds_rows(ds_tile, pa[0], w, g, qd);
    } else if constexpr (kDq) {
      const uint32_t none[4][4] = {};  // the warp's keys see none of the tile's queries
      store_ds_rows(ds_tile, none, w, g, qd);
    }
    // The stage is consumed before the next copies refill it (and, with kDq, dSᵀ is whole;
    // add_dq_share's own barriers come after every read of it).
    __syncthreads();
    if constexpr (kDq)
      add_dq_share<HS>(dqkv, dq_accum, turns, ds_tile, ks, bh, i0, j0, t, nh, scale);
  }
  if (idle) return;
  G* dst = dqkv + hd.qkv + c;
#pragma unroll
  for (int mi = 0; mi < M; ++mi) {
    write_rows<HS>(dst, 3 * c, dk[mi], first + 16 * mi, t, scale, scale);
    write_rows<HS>(dst + c, 3 * c, dv[mi], first + 16 * mi, t, 1.0f, 1.0f);
  }
}

}  // namespace
}  // namespace tessera::cuda
