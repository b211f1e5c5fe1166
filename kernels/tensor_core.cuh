// The PTX primitives of the tensor-core kernels (kernels/attention_tc.cuh): mma.sync m16n8k16,
// ldmatrix, cp.async, paired conversions and ex2. The CPU emulation the kernel tests run
// (tests/support/simt.h) defines the same functions, with the same contracts, instead.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace tessera::cuda::tc {

// lo and hi rounded to T (bf16 or fp16, to nearest even) in one register, lo in the low half: an
// mma operand pair, by one conversion instruction for the two.
template <class T>
__device__ inline uint32_t pack_rounded(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// 2^x by the special-function unit alone (exp2f adds a fix-up for results below 2^-126, which
// flush to 0 here: far below what a probability or a correction factor can add to a row).
__device__ inline float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// c += a · b for one 16×8 block: a (16 × 16, row-major) in 4 registers, b (16 × 8, column-major)
// in 2, c fp32.
template <class T>
__device__ inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 16-bit matrices from shared memory, lanes 8i..8i+7 giving the row addresses of matrix
// i: r[i] holds the lane's (row lane / 4, columns 2 (lane % 4) and + 1) of matrix i, or of its
// transpose with kTrans.
template <bool kTrans>
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address)
                 : "memory");
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address)
                 : "memory");
}

// 16 bytes from global `src` to shared `dst` by cp.async (sm_80+), not through registers; zeros
// instead when !valid (src is not read then).
__device__ inline void copy16_async(void* dst, const void* src, bool valid) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(address), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
// Closes the group of this thread's copies started since the last commit.
__device__ inline void commit_copies() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ inline void wait_copies() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// Waits until *turn (in device memory, written by other blocks) equals `expected`: one thread's
// acquire at GPU scope, so what the writer stored before passing the turn is visible after it (to
// the whole block once it passes a __syncthreads).
__device__ inline void wait_turn(const int* turn, int expected) {
  for (;;) {
    int seen;
    asm volatile("ld.global.acquire.gpu.b32 %0, [%1];" : "=r"(seen) : "l"(turn) : "memory");
    if (seen == expected) return;
    __nanosleep(32);  // leave the memory system to the writers
  }
}
// Sets *turn to `next` with release at GPU scope, after a fence: what this block stored before
// (after a __syncthreads) is visible to whoever sees the new turn.
__device__ inline void pass_turn(int* turn, int next) {
  __threadfence();
  asm volatile("st.global.release.gpu.b32 [%0], %1;" ::"l"(turn), "r"(next) : "memory");
}

}  // namespace tessera::cuda::tc
