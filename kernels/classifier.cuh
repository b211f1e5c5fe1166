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
      const float4 x = cuda_detail::load4(row + 4 * j);
      for (const float e : {x.x, x.y, x.z, x.w}) add(ms, e);
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
      const float4 x = cuda_detail::load4(row + 4 * j);
      cuda_detail::store4(l + 4 * j, float4{grad(x.x, 4 * j), grad(x.y, 4 * j + 1),
                                            grad(x.z, 4 * j + 2), grad(x.w, 4 * j + 3)});
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += kXentThreads)
      cuda_detail::store(l[j], grad(cuda_detail::load(row[j]), j));
  }
}

}  // namespace
}  // namespace tessera::cuda
