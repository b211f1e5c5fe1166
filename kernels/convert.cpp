#include "kernels/convert.h"

#include "kernels/kernel_util.h"

namespace tessera {
namespace {

// dst[i] = cast(src[i]) on the host.
template <typename To, typename From, typename Cast>
void host_convert(Tensor& out, const Tensor& in, Cast cast) {
  const From* src = in.data<From>();
  To* dst = out.data<To>();
  const int64_t n = in.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = cast(src[i]);
}

}  // namespace

void convert(Tensor& out, const Tensor& in) {
  TS_CHECK(out.defined() && in.defined(), "convert: undefined tensor");
  TS_CHECK_EQ(out.numel(), in.numel(), "convert: ", shape_str(in.shape()), " into ",
              shape_str(out.shape()));
  TS_CHECK(out.device() == in.device(), "convert: ", in.device().str(), " into ",
           out.device().str(), ": move them to one device");
  const DType from = in.dtype(), to = out.dtype();
  const bool half =
      to == DType::bf16 || to == DType::f16 || from == DType::bf16 || from == DType::f16;
  TS_CHECK(half && (from == DType::f32 || to == DType::f32), "convert: ", dtype_name(from), " -> ",
           dtype_name(to), " is not built: f32 <-> bf16 or f16 only");
  const int64_t n = in.numel();
  if (out.device().is_cuda()) {
#ifdef TESSERA_WITH_CUDA
    const CudaStream s = kernels_detail::kOpStream;
    if (to == DType::bf16) cuda::f32_to_bf16(out.data<bf16>(), in.data<float>(), n, s);
    if (to == DType::f16) cuda::f32_to_f16(out.data<f16>(), in.data<float>(), n, s);
    if (from == DType::bf16) cuda::bf16_to_f32(out.data<float>(), in.data<bf16>(), n, s);
    if (from == DType::f16) cuda::f16_to_f32(out.data<float>(), in.data<f16>(), n, s);
#endif
    return;
  }
  if (to == DType::bf16) host_convert<bf16, float>(out, in, [](float x) { return to_bf16(x); });
  if (to == DType::f16) host_convert<f16, float>(out, in, [](float x) { return to_f16(x); });
  if (from == DType::bf16) host_convert<float, bf16>(out, in, [](bf16 x) { return to_float(x); });
  if (from == DType::f16) host_convert<float, f16>(out, in, [](f16 x) { return to_float(x); });
}

float round_to(float x, DType type) {
  switch (type) {
    case DType::bf16:
      return to_float(to_bf16(x));
    case DType::f16:
      return to_float(to_f16(x));
    default:
      return x;
  }
}

Tensor rounded_f32(const Tensor& x, DType type) {
  TS_CHECK(x.device().is_cpu(), "rounded_f32: a CPU tensor, got one on ", x.device().str());
  if (x.dtype() == DType::f32 && type == DType::f32) return x;
  Tensor r = Tensor::empty(x.shape(), DType::f32);
  if (x.dtype() != DType::f32) {
    TS_CHECK(x.dtype() == type, "rounded_f32: a ", dtype_name(x.dtype()), " tensor as ",
             dtype_name(type));
    convert(r, x);
    return r;
  }
  const float* src = x.data<float>();
  float* dst = r.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = round_to(src[i], type);
  return r;
}

}  // namespace tessera
