// Shared pieces of the CUDA kernel files (included from the .cu and .cuh kernel files, and so by
// the emulated kernel tests): launch geometry, the launch check, warp reductions, deterministic
// column sums.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/dtype.h"

// A kernel's dynamic shared memory as an array of `type` named `name`, 16-byte aligned. The CPU
// emulation the kernel tests run (tests/support/simt.h) defines it as the emulated block's memory.
#ifndef TS_DYNAMIC_SHARED
#define TS_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace tessera::cuda_detail {

constexpr int kThreads = 256;  // threads per block of the element-wise kernels

// Blocks for a grid-stride loop over n elements: enough to fill any current GPU, never more than
// the work needs.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t want = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(want, 1, 65535));
}

// The CUDA type of a launcher's element type (tessera::bf16 and f16 are the same 16 raw bits as
// __nv_bfloat16 and __half), and the pointer cast between them.
template <class T>
struct CudaTypeOf {
  using type = T;
};
template <>
struct CudaTypeOf<bf16> {
  using type = __nv_bfloat16;
};
template <>
struct CudaTypeOf<f16> {
  using type = __half;
};
template <class T>
auto* cuda_ptr(T* p) {
  return reinterpret_cast<typename CudaTypeOf<T>::type*>(p);
}
template <class T>
auto* cuda_ptr(const T* p) {
  return reinterpret_cast<const typename CudaTypeOf<T>::type*>(p);
}

// An f32 value into an f32, bf16 or f16 element (round to nearest even), and back.
__device__ inline void store(float& y, float x) {
  y = x;
}
__device__ inline void store(__nv_bfloat16& y, float x) {
  y = __float2bfloat16_rn(x);
}
__device__ inline void store(__half& y, float x) {
  y = __float2half_rn(x);
}
__device__ inline float load(float x) {
  return x;
}
__device__ inline float load(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
__device__ inline float load(__half x) {
  return __half2float(x);
}

// A bf16 or f16 value (T) from its 16 bits, as fp32; and the bits of an fp32 value rounded to T
// (to nearest even).
template <class T>
__device__ inline float from_bits(unsigned short bits) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(__ushort_as_bfloat16(bits));
  else
    return __half2float(__ushort_as_half(bits));
}
template <class T>
__device__ inline uint32_t to_bits(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  else
    return __half_as_ushort(__float2half_rn(x));
}

// Four consecutive elements at p (aligned to four) as fp32, and four fp32 values stored there
// rounded to the element type: one 16-byte (f32) or 8-byte (bf16, f16) access.
__device__ inline float4 load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
template <class T>
__device__ inline float4 load4(const T* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  return {from_bits<T>(raw.x & 0xffffu), from_bits<T>(raw.x >> 16), from_bits<T>(raw.y & 0xffffu),
          from_bits<T>(raw.y >> 16)};
}
__device__ inline void store4(float* p, float4 v) {
  *reinterpret_cast<float4*>(p) = v;
}
template <class T>
__device__ inline void store4(T* p, float4 v) {
  *reinterpret_cast<uint2*>(p) =
      make_uint2(to_bits<T>(v.x) | to_bits<T>(v.y) << 16, to_bits<T>(v.z) | to_bits<T>(v.w) << 16);
}

// Whether p may be read or written 16 bytes at a time (float4, uint4).
inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Checks the launch just made (bad configuration, missing kernel image for this GPU).
#define TS_CUDA_CHECK_LAUNCH() TS_CUDA_CHECK(cudaGetLastError())

// The most dynamic shared memory one block may opt into on the current device, in bytes.
inline size_t smem_per_block_limit() {
  int device = 0, limit = 0;
  TS_CUDA_CHECK(cudaGetDevice(&device));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(limit);
}
// Lets `kernel` launch with `bytes` of dynamic shared memory (at most smem_per_block_limit()).
template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  TS_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ inline double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Deterministic column sums over many rows, in two passes: a grid of (column blocks × chunks)
// computes each row chunk's partial sums in row order, then add_partials adds the chunks in a fixed
// order. Enough blocks to fill the GPU for any row count, no atomics. kRowChunks chunks for the
// column sums (256 keep enough loads in flight for a few hundred columns; 64 left a GPT-2 bias sum
// waiting on latency); it is the launchers' kColumnChunks, with which callers size the scratch.
constexpr int kRowChunks = 256;

// out (n) += Σ_{c < chunks} partials (chunks, n): a block per 8 columns, each column's chunks
// summed by 32 threads (every 32nd chunk, in order), then those 32 sums in order. (One thread
// per column made GPT-2's 768-column sums a chain of 256-1024 dependent loads in 3 blocks.)
constexpr int kPartialColumns = 8;
static __global__ void add_partials_kernel(float* out, const float* partials, int64_t n,
                                           int chunks) {
  constexpr int kGroups = kThreads / kPartialColumns;
  __shared__ float sums[kGroups][kPartialColumns];
  const int col = threadIdx.x % kPartialColumns, group = threadIdx.x / kPartialColumns;
  const int64_t j = blockIdx.x * int64_t{kPartialColumns} + col;
  float acc = 0.0f;
  if (j < n)
#pragma unroll 4
    for (int c = group; c < chunks; c += kGroups) acc += partials[c * n + j];
  sums[group][col] = acc;
  __syncthreads();
  if (group != 0 || j >= n) return;
  float total = 0.0f;
  for (int g = 0; g < kGroups; ++g) total += sums[g][col];
  out[j] += total;
}
inline unsigned partial_sum_blocks(int64_t n) {
  return static_cast<unsigned>((n + kPartialColumns - 1) / kPartialColumns);
}

// Rows [first, end) of chunk `blockIdx.y` out of `rows`.
__device__ inline void chunk_rows(int64_t rows, int64_t& first, int64_t& end) {
  first = blockIdx.y * rows / kRowChunks;
  end = (blockIdx.y + 1) * rows / kRowChunks;
}

inline dim3 partial_grid(int64_t n) {
  return dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads), kRowChunks);
}

}  // namespace tessera::cuda_detail
