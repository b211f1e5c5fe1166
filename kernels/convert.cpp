#include "kernels/convert.h"

#include "kernels/kernel_util.h"

namespace tessera {

void convert(Tensor& out, const Tensor& in) {
  TS_CHECK(out.defined() && in.defined(), "convert: undefined tensor");
  TS_CHECK_EQ(out.numel(), in.numel(), "convert: ", shape_str(in.shape()), " into ",
              shape_str(out.shape()));
  TS_CHECK(out.device() == in.device(), "convert: ", in.device().str(), " into ",
           out.device().str(), ": move them to one device");
  const bool down = in.dtype() == DType::f32 && out.dtype() == DType::bf16;
  const bool up = in.dtype() == DType::bf16 && out.dtype() == DType::f32;
  TS_CHECK(down || up, "convert: ", dtype_name(in.dtype()), " -> ", dtype_name(out.dtype()),
           " is not built: f32 <-> bf16 only");
  const int64_t n = in.numel();
  if (out.device().is_cuda()) {
#ifdef TESSERA_WITH_CUDA
    if (down) {
      cuda::f32_to_bf16(out.data<bf16>(), in.data<float>(), n, kernels_detail::kOpStream);
    } else {
      cuda::bf16_to_f32(out.data<float>(), in.data<bf16>(), n, kernels_detail::kOpStream);
    }
#endif
    return;
  }
  if (down) {
    const float* src = in.data<float>();
    bf16* dst = out.data<bf16>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]);
  } else {
    const bf16* src = in.data<bf16>();
    float* dst = out.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
  }
}

}  // namespace tessera
