// The launchers of the fp32 attention kernels (kernels/attention_fp32.cuh) declared in
// kernels/attention.h.
#include "kernels/attention.h"
#include "kernels/attention_fp32.cuh"

namespace tessera::cuda {
namespace {

dim3 grid(int64_t b, int64_t t, int64_t nh) {
  TS_CHECK(b * nh <= 65535, "attention on CUDA takes at most 65535 (batch x heads), got ", b * nh,
           ": use a smaller train.batch_size");
  return dim3(static_cast<unsigned>((t + kWarps - 1) / kWarps), static_cast<unsigned>(b * nh));
}

void check_head(int64_t c, int64_t nh) {
  TS_CHECK(c / nh <= kMaxHs, "attention on CUDA takes head sizes up to ", kMaxHs, ", got ", c / nh);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int64_t b, int64_t t, int64_t c,
                       int64_t nh, CudaStream stream) {
  check_head(c, nh);
  if (b * t == 0) return;
  attention_forward_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(
      out, lse, qkv, t, c, nh, 1.0f / sqrtf(static_cast<float>(c / nh)));
  TS_CUDA_CHECK_LAUNCH();
}

void attention_backward(float* dqkv, float* delta, const float* dout, const float* qkv,
                        const float* out, const float* lse, int64_t b, int64_t t, int64_t c,
                        int64_t nh, CudaStream stream) {
  check_head(c, nh);
  if (b * t == 0) return;
  const float scale = 1.0f / sqrtf(static_cast<float>(c / nh));
  attention_delta_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(delta, dout, out, t, c, nh);
  TS_CUDA_CHECK_LAUNCH();
  attention_dq_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(dqkv, dout, qkv, lse, delta, t, c,
                                                               nh, scale);
  TS_CUDA_CHECK_LAUNCH();
  attention_dkv_kernel<<<grid(b, t, nh), kThreads, 0, stream>>>(dqkv, dout, qkv, lse, delta, t, c,
                                                                nh, scale);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda
