// The CUDA execution model on the CPU, for testing kernel source without a GPU: a block's threads
// run as fibers (ucontext) in the calling thread, one block after another; __syncthreads, warp
// shuffles and the tensor-core primitives of kernels/tensor_core.cuh (mma.sync m16n8k16,
// ldmatrix, cp.async, the paired conversions, ex2) are emulated with the PTX ISA's fragment
// layouts, each collective waiting for the threads it involves. A warp collective with a lane
// that has exited, or a barrier some thread never reaches, is an Error, not a hang.
//
// Include this before a kernel header (it defines TESSERA_SIMT_EMULATION, the built-ins the
// kernels read, their shared memory and the primitives), then run a kernel with simt::launch.
// Static __shared__ arrays become function-local statics (one block runs at a time), the dynamic
// shared memory (TS_DYNAMIC_SHARED) a buffer of the launch's size, filled with 0xff bytes (NaN in
// every float type) before each block. Results match the GPU's up to the order of each mma's sum
// and ex2's last bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>

namespace tessera::simt {

using Dim3 = ::dim3;

// The calling fiber's thread and block indices, and the launch's dimensions.
const Dim3& thread_idx();
const Dim3& block_idx();
const Dim3& grid_dim();
const Dim3& block_dim();

// When a cp.async copy lands: as it is issued (a stage refilled while another warp still reads
// it shows), or as late as the PTX allows, at the cp.async.wait_group that needs it (a read
// before that wait shows). Kernel tests run both.
enum class CopyLanding { at_issue, at_wait };

// Runs kernel() once for every thread of every block of `grid` (blocks in order, x fastest), a
// block's `threads` (a multiple of 32, in x) as fibers, with `shared_bytes` of dynamic shared
// memory. Rethrows what a thread threw.
void launch(Dim3 grid, unsigned threads, size_t shared_bytes, const std::function<void()>& kernel,
            CopyLanding landing = CopyLanding::at_issue);

// cp.async for the calling thread: a 16-byte copy (zeros when !valid) into its open group, the
// group closed, and every group but the `pending` newest landed.
void async_copy16(void* dst, const void* src, bool valid);
void commit_async_copies();
void wait_async_copies(int pending);

// The running block's dynamic shared memory (16-byte aligned).
unsigned char* dynamic_shared();

// The block's barrier: every thread that has not exited.
void syncthreads();

// A warp collective: each lane of the calling warp passes in and out (its own objects); when all
// 32 have, op(ins, outs) runs once with every lane's, indexed by lane, then each lane returns.
using WarpOp = void (*)(const void* const* ins, void* const* outs);
void warp_collective(const void* in, void* out, WarpOp op);

// The warp's shuffles: each lane gets the value of lane `arg` (its own arg), or of its own lane
// xor `arg`.
template <class V>
V shuffle(V value, int arg, bool xor_lanes) {
  struct In {
    V value;
    int arg;
    bool xor_lanes;
  };
  const In in{value, arg, xor_lanes};
  V out;
  warp_collective(&in, &out, [](const void* const* ins, void* const* outs) {
    for (int lane = 0; lane < 32; ++lane) {
      const In& mine = *static_cast<const In*>(ins[lane]);
      const int from = mine.xor_lanes ? lane ^ mine.arg : mine.arg % 32;
      *static_cast<V*>(outs[lane]) = static_cast<const In*>(ins[from])->value;
    }
  });
  return out;
}

}  // namespace tessera::simt

#define TESSERA_SIMT_EMULATION 1
#define threadIdx (::tessera::simt::thread_idx())
#define blockIdx (::tessera::simt::block_idx())
#define gridDim (::tessera::simt::grid_dim())
#define blockDim (::tessera::simt::block_dim())
#define __syncthreads() ::tessera::simt::syncthreads()
#define __shfl_xor_sync(mask, value, lane_mask) ::tessera::simt::shuffle(value, lane_mask, true)
#define __shfl_sync(mask, value, src_lane) ::tessera::simt::shuffle(value, src_lane, false)
#define __uint_as_float(bits) ::std::bit_cast<float>(static_cast<uint32_t>(bits))
#define __launch_bounds__(...)
#define __fadd_rn(a, b) ((a) + (b))
#define __ldcg(p) (*(p))

// Atomics: one block runs at a time, one fiber at a time.
template <class V>
V atomicAdd(V* address, V value) {
  const V old = *address;
  *address = old + value;
  return old;
}
#undef __shared__
#define __shared__ static
#define TS_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::tessera::simt::dynamic_shared())

#include "kernels/cuda_util.cuh"  // after the definitions above: its kernels use them

// kernels/tensor_core.cuh's primitives, same names and contracts.
namespace tessera::cuda::tc {

template <class T>
inline uint32_t pack_rounded(float lo, float hi) {
  return cuda_detail::to_bits<T>(lo) | cuda_detail::to_bits<T>(hi) << 16;
}

// ex2.approx.ftz: subnormal inputs and results are zero.
float exp2_approx(float x);

namespace detail {
template <class T>
void mma_op(const void* const* ins, void* const* outs);
template <bool kTrans>
void ldmatrix_op(const void* const* ins, void* const* outs);
struct MmaIn {
  uint32_t a[4], b[2];
  float c[4];
};
}  // namespace detail

template <class T>
inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const detail::MmaIn in{{a[0], a[1], a[2], a[3]}, {b0, b1}, {c[0], c[1], c[2], c[3]}};
  simt::warp_collective(&in, c, detail::mma_op<T>);
}

template <bool kTrans>
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  simt::warp_collective(&row, r, detail::ldmatrix_op<kTrans>);
}

inline void copy16_async(void* dst, const void* src, bool valid) {
  simt::async_copy16(dst, src, valid);
}
inline void commit_copies() {
  simt::commit_async_copies();
}
template <int kPending>
inline void wait_copies() {
  simt::wait_async_copies(kPending);
}

// Blocks run one after another here, so a turn is either there already or never comes: the
// latter is the GPU's deadlock, an Error.
void wait_turn(const int* turn, int expected);
inline void pass_turn(int* turn, int next) {
  *turn = next;
}

}  // namespace tessera::cuda::tc
