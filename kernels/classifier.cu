// The launchers of the softmax cross-entropy kernel (kernels/classifier.cuh) declared in
// kernels/classifier.h.
#include "kernels/classifier.cuh"
#include "kernels/classifier.h"

namespace tessera::cuda {
namespace {

template <class L>
void launch(L* logits, float* losses, const int32_t* targets, int64_t rows, int64_t v,
            int64_t vocab_start, float dloss, bool backward, CudaStream stream) {
  if (rows == 0) return;
  // Every row starts on a 4-value boundary.
  const bool vectors = v % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % (4 * sizeof(L)) == 0;
  auto* kernel = softmax_xent_kernel<typename cuda_detail::CudaTypeOf<L>::type>;
  // The backward stages a row for its second pass when the row fits beside the kernel's own
  // scratch (its static shared memory); the forward reads each row once anyway.
  const size_t row_bytes = static_cast<size_t>(v) * sizeof(L);
  const bool staged = backward && row_bytes + sizeof(MaxSum) * kXentThreads / 32 <=
                                      cuda_detail::smem_per_block_limit();
  const size_t smem = staged ? row_bytes : 0;
  if (staged) cuda_detail::allow_smem(kernel, smem);
  kernel<<<static_cast<unsigned>(rows), kXentThreads, smem, stream>>>(
      cuda_detail::cuda_ptr(logits), losses, targets, v, vocab_start, dloss, backward, vectors,
      staged);
  TS_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <class L>
void softmax_xent(L* logits, float* losses, const int32_t* targets, int64_t rows, int64_t v,
                  int64_t vocab_start, float dloss, CudaStream stream) {
  launch(logits, losses, targets, rows, v, vocab_start, dloss, true, stream);
}

template <class L>
void softmax_xent_forward(const L* logits, float* losses, const int32_t* targets, int64_t rows,
                          int64_t v, int64_t vocab_start, CudaStream stream) {
  launch(const_cast<L*>(logits), losses, targets, rows, v, vocab_start, 0.0f, false, stream);
}

#define TS_SOFTMAX_XENT(L)                                                                        \
  template void softmax_xent(L*, float*, const int32_t*, int64_t, int64_t, int64_t, float,        \
                             CudaStream);                                                         \
  template void softmax_xent_forward(const L*, float*, const int32_t*, int64_t, int64_t, int64_t, \
                                     CudaStream);
TS_SOFTMAX_XENT(float)
TS_SOFTMAX_XENT(bf16)
TS_SOFTMAX_XENT(f16)
#undef TS_SOFTMAX_XENT

}  // namespace tessera::cuda
