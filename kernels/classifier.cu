// Softmax cross-entropy over a chunk of logits on CUDA (kernels/classifier.h); the GEMMs around
// it are cuda::gemm. A block per row, two reads of the row: the running maximum and sum of
// exponentials together (online softmax, the CPU's sum up to rounding), then for backward each
// exponential again, scaled into dlogits (tiny probabilities flushed to zero as on the CPU),
// written in the type the GEMMs after it read. 16-byte accesses where the rows allow them: the
// rows (GPT-2's are 200 KB) come from device memory each time, so bytes are the kernel's time.
#include <cfloat>

#include "kernels/classifier.h"
#include "kernels/cuda_util.cuh"

namespace tessera::cuda {
namespace {

using cuda_detail::kThreads;

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

// The merge of every thread's a in a block of kThreads threads, returned to all of them.
__device__ MaxSum block_merge(MaxSum a, MaxSum* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1)
    a = merge(
        a, {__shfl_xor_sync(0xffffffffu, a.m, offset), __shfl_xor_sync(0xffffffffu, a.s, offset)});
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = a;
  __syncthreads();
  MaxSum r = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) r = merge(r, scratch[w]);
  return r;
}

// dst[0..3] = x, in G: one 16-byte (float) or 8-byte (16-bit) store.
__device__ inline void store4(float* dst, const float (&x)[4]) {
  *reinterpret_cast<float4*>(dst) = make_float4(x[0], x[1], x[2], x[3]);
}
template <class G>
__device__ inline void store4(G* dst, const float (&x)[4]) {
  G y[4];
  for (int e = 0; e < 4; ++e) cuda_detail::store(y[e], x[e]);
  *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(y);
}

// logits (rows, v) for vocabulary ids [vocab_start, vocab_start + v); targets (rows) i32; dlogits
// (rows, v) of type G, or null for the loss alone. dlogits may alias logits when G is float: each
// element is read for the last time, by the thread that writes it, just before it is written
// (the target's logit, by thread 0, before the barrier that precedes every write).
template <class G>
__global__ void softmax_xent_kernel(const float* logits, float* losses, G* dlogits,
                                    const int32_t* targets, int64_t v, int64_t vocab_start,
                                    float dloss, bool vectors) {
  __shared__ MaxSum scratch[kThreads / 32];
  const float* l = logits + blockIdx.x * v;
  const auto* l4 = reinterpret_cast<const float4*>(l);
  MaxSum ms;
  if (vectors) {
    for (int64_t j = threadIdx.x; j < v / 4; j += kThreads) {
      const float4 x = l4[j];
      add(ms, x.x);
      add(ms, x.y);
      add(ms, x.z);
      add(ms, x.w);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += kThreads) add(ms, l[j]);
  }
  // Thread 0 reads the target's logit before block_merge's barrier: after it, dlogits (which may
  // be logits itself) is written.
  const int64_t target = targets[blockIdx.x] - vocab_start;
  const float target_logit = threadIdx.x == 0 && target >= 0 && target < v ? l[target] : 0.0f;
  ms = block_merge(ms, scratch);
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(ms.s) + ms.m - target_logit;
  if (dlogits == nullptr) return;
  const float scale = dloss / ms.s;
  auto grad = [&](float x, int64_t j) {
    const float g = expf(x - ms.m) * scale;
    return (fabsf(g) < FLT_MIN ? 0.0f : g) - (j == target ? dloss : 0.0f);
  };
  G* dl = dlogits + blockIdx.x * v;
  if (vectors) {
    for (int64_t j = threadIdx.x; j < v / 4; j += kThreads) {
      const float4 x = l4[j];
      const float g[4] = {grad(x.x, 4 * j), grad(x.y, 4 * j + 1), grad(x.z, 4 * j + 2),
                          grad(x.w, 4 * j + 3)};
      store4(dl + 4 * j, g);
    }
  } else {
    for (int64_t j = threadIdx.x; j < v; j += kThreads) cuda_detail::store(dl[j], grad(l[j], j));
  }
}

}  // namespace

template <class G>
void softmax_xent(const float* logits, float* losses, G* dlogits, const int32_t* targets,
                  int64_t rows, int64_t v, int64_t vocab_start, float dloss, CudaStream stream) {
  if (rows == 0) return;
  using cuda_detail::aligned16;
  const bool vectors = v % 4 == 0 && aligned16(logits) && aligned16(dlogits);  // every row aligned
  softmax_xent_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      logits, losses, cuda_detail::cuda_ptr(dlogits), targets, v, vocab_start, dloss, vectors);
  TS_CUDA_CHECK_LAUNCH();
}
template void softmax_xent(const float*, float*, float*, const int32_t*, int64_t, int64_t, int64_t,
                           float, CudaStream);
template void softmax_xent(const float*, float*, bf16*, const int32_t*, int64_t, int64_t, int64_t,
                           float, CudaStream);
template void softmax_xent(const float*, float*, f16*, const int32_t*, int64_t, int64_t, int64_t,
                           float, CudaStream);

void softmax_xent_forward(const float* logits, float* losses, const int32_t* targets, int64_t rows,
                          int64_t v, int64_t vocab_start, CudaStream stream) {
  softmax_xent<float>(logits, losses, nullptr, targets, rows, v, vocab_start, 0.0f, stream);
}

}  // namespace tessera::cuda
