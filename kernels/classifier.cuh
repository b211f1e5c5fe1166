// Softmax cross-entropy over a chunk of logits on CUDA (kernels/classifier.h); the GEMMs around
// it are cuda::gemm. A block per row, two passes over the row: the running maximum and sum of
// exponentials together (online softmax, the CPU's sum up to rounding), then for backward each
// exponential again, scaled into dlogits in place (tiny probabilities flushed to zero as on the
// CPU). Logits of the GEMMs' type (f32, or 16-bit: half the bytes), 4 values an access where the
// rows allow it. Bytes are the kernel's time, so a row that fits in shared memory (GPT-2's bf16
// rows are 100 KB) is staged there by the first pass and the second reads it from there: one read
// and one write of device memory a value instead of two reads and a write.
//
// The kernels only: the .cu beside this header launches them (and the CPU emulation tests include
// them), so they stay in an unnamed namespace.
#pragma once

#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

// Threads of a block: many, as a staged row leaves room for only one or two blocks a
// multiprocessor, and their loads must keep device memory busy.
constexpr int kXentThreads = 1024;

// The maximum m of some values and the sum s of exp(value − m).
struct MaxSum {
  float m = -INFINITY;
  float s = 0.0f;
};

__device__ inline void add(MaxSum& a, float x) {
  if (x > a.m) {
    a.s = a.s * expf(a.m - x) + 1.0f;
    a.m = x;
  } else if (x != -INFINITY) {  // (a −inf while the maximum is −inf adds nothing, not NaN)
    a.s += expf(x - a.m);
  }
}

__device__ inline MaxSum merge(MaxSum a, MaxSum b) {
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) return b;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// The merge of every thread's a in a block of kXentThreads threads, returned to all of them.
__device__ MaxSum block_merge(MaxSum a, MaxSum* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1)
    a = merge(
        a, {__shfl_xor_sync(0xffffffffu, a.m, offset), __shfl_xor_sync(0xffffffffu, a.s, offset)});
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = a;
  __syncthreads();
  MaxSum r = scratch[0];
  for (int w = 1; w < kXentThreads / 32; ++w) r = merge(r, scratch[w]);
  return r;
}

// Four consecutive values of type L as floats, and back: one 16-byte (float) or 8-byte (16-bit)
// access.
__device__ inline void load4(float (&x)[4], const float* p) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  x[0] = v.x;
  x[1] = v.y;
  x[2] = v.z;
  x[3] = v.w;
}
// A 16-bit value of type L (bf16 or fp16) from its bits as fp32, and the bits of an fp32 value
// rounded to L (to nearest even).
template <class L>
__device__ inline float from_bits(unsigned short bits) {
  if constexpr (std::is_same_v<L, __nv_bfloat16>)
    return __bfloat162float(__ushort_as_bfloat16(bits));
  else
    return __half2float(__ushort_as_half(bits));
}
template <class L>
__device__ inline uint32_t to_bits(float x) {
  if constexpr (std::is_same_v<L, __nv_bfloat16>)
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  else
    return __half_as_ushort(__float2half_rn(x));
}
template <class L>
__device__ inline void load4(float (&x)[4], const L* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  x[0] = from_bits<L>(raw.x & 0xffffu);
  x[1] = from_bits<L>(raw.x >> 16);
  x[2] = from_bits<L>(raw.y & 0xffffu);
  x[3] = from_bits<L>(raw.y >> 16);
}
__device__ inline void store4(float* dst, const float (&x)[4]) {
  *reinterpret_cast<float4*>(dst) = make_float4(x[0], x[1], x[2], x[3]);
}
template <class L>
__device__ inline void store4(L* dst, const float (&x)[4]) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(to_bits<L>(x[0]) | to_bits<L>(x[1]) << 16,
                                              to_bits<L>(x[2]) | to_bits<L>(x[3]) << 16);
}
// Four consecutive values from src to dst, bits unchanged, in one access.
__device__ inline void copy4(float* dst, const float* src) {
  *reinterpret_cast<float4*>(dst) = *reinterpret_cast<const float4*>(src);
}
template <class L>
__device__ inline void copy4(L* dst, const L* src) {
  *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(src);
}

// logits (rows, v) of type L for vocabulary ids [vocab_start, vocab_start + v); targets (rows)
// i32. With `backward` the row becomes its dlogits in place: each element is read for the last
// time, by the thread that writes it, just before it is written (the target's logit, by thread 0,
// before the barrier that precedes every write). With `staged` the first pass copies the row into
// dynamic shared memory (v values of L) and the second reads it there: each thread reads back only
// what it copied.
template <class L>
__global__ void __launch_bounds__(kXentThreads)
    softmax_xent_kernel(L* logits, float* losses, const int32_t* targets, int64_t v,
                        int64_t vocab_start, float dloss, bool backward, bool vectors,
                        bool staged) {
  TS_DYNAMIC_SHARED(unsigned char, staging);
  __shared__ MaxSum scratch[kXentThreads / 32];
  L* l = logits + blockIdx.x * v;
  L* row = staged ? reinterpret_cast<L*>(staging) : l;  // where the passes read the row
  MaxSum ms;
  if (vectors) {
#pragma unroll 4  // loads of several vectors in flight
    for (int64_t j = threadIdx.x; j < v / 4; j += kXentThreads) {
      if (staged) copy4(row + 4 * j, l + 4 * j);
      float x[4];
      load4(x, row + 4 * j);
      for (int e = 0; e < 4; ++e) add(ms, x[e]);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += kXentThreads) {
      if (staged) row[j] = l[j];
      add(ms, cuda_detail::load(row[j]));
    }
  }
  // Thread 0 reads the target's logit before block_merge's barrier: after it, dlogits are written.
  const int64_t target = targets[blockIdx.x] - vocab_start;
  const float target_logit =
      threadIdx.x == 0 && target >= 0 && target < v ? cuda_detail::load(l[target]) : 0.0f;
  ms = block_merge(ms, scratch);
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(ms.s) + ms.m - target_logit;
  if (!backward) return;
  const float scale = dloss / ms.s;
  auto grad = [&](float x, int64_t j) {
    const float g = expf(x - ms.m) * scale;
    return (fabsf(g) < FLT_MIN ? 0.0f : g) - (j == target ? dloss : 0.0f);
  };
  if (vectors) {
    for (int64_t j = threadIdx.x; j < v / 4; j += kXentThreads) {
      float x[4];
      load4(x, row + 4 * j);
      const float g[4] = {grad(x[0], 4 * j), grad(x[1], 4 * j + 1), grad(x[2], 4 * j + 2),
                          grad(x[3], 4 * j + 3)};
      store4(l + 4 * j, g);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += kXentThreads)
      cuda_detail::store(l[j], grad(cuda_detail::load(row[j]), j));
  }
}

}  // namespace
}  // namespace tessera::cuda
