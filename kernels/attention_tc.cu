// The launchers of the tensor-core attention kernels declared in kernels/attention.h: shapes and
// alignment checked, then kernels/attention_tc_launch.cuh's launches with the default variants.
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/attention_tc_launch.cuh"

namespace tessera::cuda {
namespace {

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

}  // namespace

template <class O, class T>
void attention_forward_tc(O* out, float* lse, const T* qkv, int64_t b, int64_t t, int64_t c,
                          int64_t nh, CudaStream stream) {
  const int hs = check_head_tc(b, c, nh);
  if (b * t == 0) return;
  check_aligned(qkv, "qkv");
  with_head_size(hs, [&]<int HS>() {
    forward_tc<HS, kForwardTilesM<HS>>(cuda_detail::cuda_ptr(out), lse, cuda_detail::cuda_ptr(qkv),
                                       b, t, c, nh, stream);
  });
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
  with_head_size(hs, [&]<int HS>() {
    backward_tc<HS, kDqInDkv<HS>>(cuda_detail::cuda_ptr(dqkv), delta, dq_accum, turns,
                                  cuda_detail::cuda_ptr(dout), cuda_detail::cuda_ptr(qkv),
                                  cuda_detail::cuda_ptr(out), lse, b, t, c, nh, stream);
  });
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
