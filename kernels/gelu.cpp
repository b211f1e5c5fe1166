#include "kernels/gelu.h"

#include <cmath>

#include "kernels/kernel_util.h"
#include "kernels/vec_math.h"

namespace tessera {
namespace {

using kernels_detail::backend_f32;
using kernels_detail::kOpStream;
using kernels_detail::tanh_f32;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;

// f<Y, X>() with Y `out`'s element type and X `inp`'s: f32, or Y's own 16-bit type.
template <class F>
void visit_out_inp(const char* op, const Tensor& out, const Tensor& inp, F&& f) {
  kernels_detail::check_float(op, "out", out, inp);
  kernels_detail::check_float(op, "inp", inp, out);
  TS_CHECK(inp.dtype() == DType::f32 || inp.dtype() == out.dtype(), op, ": inp is ",
           dtype_name(inp.dtype()), ": f32, or the output's type (", dtype_name(out.dtype()), ")");
  kernels_detail::visit_float(out.dtype(), [&]<class Y>() {
    if (inp.dtype() == DType::f32)
      f.template operator()<Y, float>();
    else
      f.template operator()<Y, Y>();
  });
}

}  // namespace

void gelu_forward(Tensor& out, const Tensor& inp) {
  TS_CHECK(out.defined() && inp.defined(), "gelu_forward: out and inp must be defined");
  TS_CHECK_EQ(out.numel(), inp.numel(), "gelu_forward: out vs inp elements");
  const auto backend = kernels_detail::backend_of(inp);
  visit_out_inp("gelu_forward", out, inp, [&]<class Y, class X>() {
    TS_RUN_ON_CUDA(backend,
                   cuda::gelu_forward(out.data<Y>(), inp.data<X>(), inp.numel(), kOpStream));
    const X* x = inp.data<X>();
    Y* y = out.data<Y>();
    const int64_t n = inp.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float xi = kernels_detail::load(x[i]);
      kernels_detail::store(
          y[i], 0.5f * xi * (1.0f + tanh_f32(kSqrt2OverPi * (xi + kCoeff * xi * xi * xi))));
    }
  });
}

void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp) {
  const auto backend = backend_f32("gelu_backward", {{"dout", dout}});
  if (inp.defined()) kernels_detail::check_float("gelu_backward", "inp", inp, dout);
  TS_CHECK(
      dinp.defined() && inp.defined() && dinp.numel() == inp.numel() && dout.numel() == inp.numel(),
      "gelu_backward: dinp, dout and inp must have the same number of elements");
  visit_out_inp("gelu_backward", dinp, inp, [&]<class D, class X>() {
    TS_RUN_ON_CUDA(backend, cuda::gelu_backward(dinp.data<D>(), dout.data<float>(), inp.data<X>(),
                                                inp.numel(), kOpStream));
    const X* x = inp.data<X>();
    const float* dy = dout.data<float>();
    D* dx = dinp.data<D>();
    const int64_t n = inp.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float xi = kernels_detail::load(x[i]);
      const float u = kSqrt2OverPi * (xi + kCoeff * xi * xi * xi);
      const float th = tanh_f32(u);
      const float sech2 = 1.0f - th * th;
      const float du = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * xi * xi);
      kernels_detail::store(dx[i], dy[i] * (0.5f * (1.0f + th) + 0.5f * xi * sech2 * du));
    }
  });
}

}  // namespace tessera
