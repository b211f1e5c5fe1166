// The launchers of the layernorm kernels (kernels/layernorm.cuh) declared in kernels/layernorm.h.
#include "kernels/layernorm.cuh"

namespace tessera::cuda {
namespace {

unsigned row_blocks(int64_t n) {
  return static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
}

}  // namespace

template <class Y>
void layernorm_forward(Y* out, float* mean, float* rstd, float* res, const float* inp,
                       const float* b, const float* weight, const float* bias, int64_t n, int64_t c,
                       CudaStream stream) {
  if (n == 0) return;
  using cuda_detail::aligned16;
  const bool in_registers = c % 4 == 0 && c <= 32 * 4 * kRowVecs && aligned16(out) &&
                            aligned16(inp) && aligned16(weight) && aligned16(bias) &&
                            (!b || (aligned16(b) && aligned16(res)));
  auto* kernel = in_registers
                     ? layernorm_forward_row_kernel<typename cuda_detail::CudaTypeOf<Y>::type>
                     : layernorm_forward_kernel<typename cuda_detail::CudaTypeOf<Y>::type>;
  kernel<<<row_blocks(n), kThreads, 0, stream>>>(cuda_detail::cuda_ptr(out), mean, rstd, res, inp,
                                                 b, weight, bias, n, static_cast<int>(c));
  TS_CUDA_CHECK_LAUNCH();
}
template void layernorm_forward(float*, float*, float*, float*, const float*, const float*,
                                const float*, const float*, int64_t, int64_t, CudaStream);
template void layernorm_forward(bf16*, float*, float*, float*, const float*, const float*,
                                const float*, const float*, int64_t, int64_t, CudaStream);
template void layernorm_forward(f16*, float*, float*, float*, const float*, const float*,
                                const float*, const float*, int64_t, int64_t, CudaStream);

template <class H>
void layernorm_backward(float* dinp, H* rounded, float* dweight, float* dbias, float* partials,
                        const float* dout, const float* inp, const float* weight, const float* mean,
                        const float* rstd, const float* dresidual, int64_t n, int64_t c,
                        CudaStream stream) {
  using Copy = typename cuda_detail::CudaTypeOf<H>::type;
  using cuda_detail::aligned16;
  if (n == 0) return;
  // 16-byte accesses where the rows allow them, a float4 array sized for C.
  const bool vectors = c % 4 == 0 && c <= 32 * 4 * 16 && aligned16(dinp) && aligned16(dout) &&
                       aligned16(inp) && aligned16(weight) &&
                       (!dresidual || aligned16(dresidual)) && (!rounded || aligned16(rounded));
  auto* kernel = !vectors    ? layernorm_backward_kernel<Copy>
                 : c <= 1024 ? layernorm_backward_row_kernel<8, Copy>
                             : layernorm_backward_row_kernel<16, Copy>;
  // 8 warps a block, fewer when their (2, C) rows of sums would not fit in shared memory.
  const size_t limit = cuda_detail::smem_per_block_limit(), row_bytes = 2 * c * sizeof(float);
  TS_CHECK(row_bytes <= limit, "layernorm_backward on CUDA takes C up to ",
           limit / (2 * sizeof(float)), ", got ", c);
  int warps = kRowsPerBlock;
  while (warps > 1 && warps * row_bytes > limit) warps /= 2;
  const size_t smem = warps * row_bytes;
  cuda_detail::allow_smem(kernel, smem);
  kernel<<<kLayerNormChunks, 32 * warps, smem, stream>>>(dinp, cuda_detail::cuda_ptr(rounded),
                                                         partials, dout, inp, weight, mean, rstd,
                                                         dresidual, n, static_cast<int>(c));
  TS_CUDA_CHECK_LAUNCH();
  const int64_t chunk_floats = int64_t{kLayerNormChunks} * c;
  const unsigned blocks = cuda_detail::partial_sum_blocks(c);
  cuda_detail::add_partials_kernel<<<blocks, kThreads, 0, stream>>>(dweight, partials, c,
                                                                    kLayerNormChunks);
  TS_CUDA_CHECK_LAUNCH();
  cuda_detail::add_partials_kernel<<<blocks, kThreads, 0, stream>>>(dbias, partials + chunk_floats,
                                                                    c, kLayerNormChunks);
  TS_CUDA_CHECK_LAUNCH();
}
#define TS_LAYERNORM_BACKWARD(H)                                                                   \
  template void layernorm_backward(float*, H*, float*, float*, float*, const float*, const float*, \
                                   const float*, const float*, const float*, const float*,         \
                                   int64_t, int64_t, CudaStream);
TS_LAYERNORM_BACKWARD(float)
TS_LAYERNORM_BACKWARD(bf16)
TS_LAYERNORM_BACKWARD(f16)
#undef TS_LAYERNORM_BACKWARD

}  // namespace tessera::cuda
