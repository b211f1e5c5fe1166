// The launchers of the tensor-core attention kernels (kernels/attention_tc.cuh) declared in
// kernels/attention.h: shapes and alignment checked, shared memory opted into, grids sized.
#include <cmath>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/attention_tc.cuh"

namespace tessera::cuda {
namespace {

// Lets `kernel` use `bytes` of shared memory, or throws Error saying the head is too large for
// this GPU.
template <class Kernel>
void allow_smem(Kernel kernel, size_t bytes, int hs) {
  const size_t limit = cuda_detail::smem_per_block_limit();
  TS_CHECK(bytes <= limit, "16-bit attention with head size ", hs, " needs ", bytes,
           " bytes of shared memory per block, this GPU has ", limit,
           ": use train.precision: fp32 or a smaller head");
  cuda_detail::allow_smem(kernel, bytes);
}

int check_head_tc(int64_t b, int64_t c, int64_t nh) {
  const int64_t hs = c / nh;
  TS_CHECK(hs == 16 || hs == 32 || hs == 64 || hs == 128,
           "16-bit attention takes head sizes 16, 32, 64 and 128, got ", hs,
           ": use train.precision: fp32, or another model.n_head");
  TS_CHECK(b * nh <= 65535, "attention on CUDA takes at most 65535 (batch x heads), got ", b * nh,
           ": use a smaller train.batch_size");
  return static_cast<int>(hs);
}

// The tiles' 16-byte copies need 16-byte aligned rows (tensors from the allocator are).
void check_aligned(const void* p, const char* what) {
  TS_CHECK(cuda_detail::aligned16(p), "16-bit attention reads ", what,
           " 16 bytes at a time: its data must start on a 16-byte boundary (an offset view? pass "
           "a contiguous copy)");
}

// grid (ceil(T / rows), B · NH) for blocks of `rows` rows.
dim3 grid_tc(int64_t b, int64_t t, int64_t nh, int rows) {
  return dim3(static_cast<unsigned>((t + rows - 1) / rows), static_cast<unsigned>(b * nh));
}

// f() with the head size as a template argument.
template <class F>
void with_head_size(int hs, F&& f) {
  switch (hs) {
    case 16:
      return f.template operator()<16>();
    case 32:
      return f.template operator()<32>();
    case 64:
      return f.template operator()<64>();
    default:
      return f.template operator()<128>();  // check_head_tc allows no other
  }
}

template <class T, class O>
void forward_tc(O* out, float* lse, const T* qkv, int64_t b, int64_t t, int64_t c, int64_t nh,
                int hs, CudaStream stream) {
  with_head_size(hs, [&]<int HS>() {
    const size_t smem = (kForwardRows + 4 * kCols) * kLd<HS> * sizeof(T);
    allow_smem(forward_tc_kernel<HS, T, O>, smem, hs);
    forward_tc_kernel<HS, T, O>
        <<<grid_tc(b, t, nh, kForwardRows), 32 * kForwardWarps<HS>, smem, stream>>>(
            out, lse, qkv, t, c, nh, 1.0f / sqrtf(static_cast<float>(hs)));
    TS_CUDA_CHECK_LAUNCH();
  });
}

template <class T, class G>
void backward_tc(G* dqkv, float* delta, float* dq_accum, int* turns, const T* dout, const T* qkv,
                 const G* out, const float* lse, int64_t b, int64_t t, int64_t c, int64_t nh,
                 int hs, CudaStream stream) {
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  with_head_size(hs, [&]<int HS>() {
    const int64_t rows = b * t * nh,
                  delta_blocks = (rows * HS / 8 + kDeltaThreads - 1) / kDeltaThreads;
    delta_tc_kernel<HS, T, G><<<static_cast<unsigned>(delta_blocks), kDeltaThreads, 0, stream>>>(
        delta, dout, out, rows, t, nh);
    TS_CUDA_CHECK_LAUNCH();
    constexpr int kRows = kBackwardRows, kThreads = 32 * kBackwardWarps;
    const size_t tiles = (2 * kRows + 4 * kCols) * kLd<HS> * sizeof(T);
    constexpr bool kDq = kDqInDkv<HS>;
    if constexpr (!kDq) {
      allow_smem(dq_tc_kernel<HS, T, G>, tiles, hs);
      dq_tc_kernel<HS, T, G><<<grid_tc(b, t, nh, kRows), kThreads, tiles, stream>>>(
          dqkv, dout, qkv, lse, delta, t, c, nh, scale);
      TS_CUDA_CHECK_LAUNCH();
    } else {
      TS_CUDA_CHECK(  // the turns and the ticket counter
          cudaMemsetAsync(turns, 0, attention_dq_turns(b, t, nh) * sizeof(int32_t), stream));
    }
    const size_t dkv_smem =
        tiles + 4 * kCols * sizeof(float) + (kDq ? kRows * kLdS * sizeof(T) : 0);
    allow_smem(dkv_tc_kernel<HS, T, G, kDq>, dkv_smem, hs);
    dkv_tc_kernel<HS, T, G, kDq><<<grid_tc(b, t, nh, kRows), kThreads, dkv_smem, stream>>>(
        dqkv, dq_accum, turns, dout, qkv, lse, delta, t, c, nh, scale);
    TS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

template <class O, class T>
void attention_forward_tc(O* out, float* lse, const T* qkv, int64_t b, int64_t t, int64_t c,
                          int64_t nh, CudaStream stream) {
  const int hs = check_head_tc(b, c, nh);
  if (b * t == 0) return;
  check_aligned(qkv, "qkv");
  forward_tc(cuda_detail::cuda_ptr(out), lse, cuda_detail::cuda_ptr(qkv), b, t, c, nh, hs, stream);
}

template <class O, class T>
void attention_backward_tc(O* dqkv, float* delta, float* dq_accum, int32_t* turns, const T* dout,
                           const T* qkv, const O* out, const float* lse, int64_t b, int64_t t,
                           int64_t c, int64_t nh, CudaStream stream) {
  const int hs = check_head_tc(b, c, nh);
  if (b * t == 0) return;
  check_aligned(qkv, "qkv");
  check_aligned(dout, "dout");
  check_aligned(out, "out");
  backward_tc(cuda_detail::cuda_ptr(dqkv), delta, dq_accum, turns, cuda_detail::cuda_ptr(dout),
              cuda_detail::cuda_ptr(qkv), cuda_detail::cuda_ptr(out), lse, b, t, c, nh, hs, stream);
}

#define TS_ATTENTION_TC(O, T)                                                                     \
  template void attention_forward_tc(O*, float*, const T*, int64_t, int64_t, int64_t, int64_t,    \
                                     CudaStream);                                                 \
  template void attention_backward_tc(O*, float*, float*, int32_t*, const T*, const T*, const O*, \
                                      const float*, int64_t, int64_t, int64_t, int64_t,           \
                                      CudaStream);
TS_ATTENTION_TC(float, bf16)
TS_ATTENTION_TC(bf16, bf16)
TS_ATTENTION_TC(float, f16)
TS_ATTENTION_TC(f16, f16)
#undef TS_ATTENTION_TC

}  // namespace tessera::cuda
