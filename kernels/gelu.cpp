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

}  // namespace

void gelu_forward(Tensor& out, const Tensor& inp) {
  const auto backend = backend_f32("gelu_forward", {{"inp", inp}});
  kernels_detail::check_float("gelu_forward", "out", out, inp);
  TS_CHECK_EQ(out.numel(), inp.numel(), "gelu_forward: out vs inp elements");
  kernels_detail::visit_float(out.dtype(), [&]<class Y>() {
    TS_RUN_ON_CUDA(backend,
                   cuda::gelu_forward(out.data<Y>(), inp.data<float>(), inp.numel(), kOpStream));
    const float* x = inp.data<float>();
    Y* y = out.data<Y>();
    const int64_t n = inp.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float xi = x[i];
      kernels_detail::store(
          y[i], 0.5f * xi * (1.0f + tanh_f32(kSqrt2OverPi * (xi + kCoeff * xi * xi * xi))));
    }
  });
}

void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp) {
  const auto backend = backend_f32("gelu_backward", {{"dout", dout}, {"inp", inp}});
  kernels_detail::check_float("gelu_backward", "dinp", dinp, inp);
  TS_CHECK(dinp.numel() == inp.numel() && dout.numel() == inp.numel(),
           "gelu_backward: dinp, dout and inp must have the same number of elements");
  kernels_detail::visit_float(dinp.dtype(), [&]<class D>() {
    TS_RUN_ON_CUDA(backend, cuda::gelu_backward(dinp.data<D>(), dout.data<float>(),
                                                inp.data<float>(), inp.numel(), kOpStream));
    const float* x = inp.data<float>();
    const float* dy = dout.data<float>();
    D* dx = dinp.data<D>();
    const int64_t n = inp.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float xi = x[i];
      const float u = kSqrt2OverPi * (xi + kCoeff * xi * xi * xi);
      const float th = tanh_f32(u);
      const float sech2 = 1.0f - th * th;
      const float du = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * xi * xi);
      kernels_detail::store(dx[i], dy[i] * (0.5f * (1.0f + th) + 0.5f * xi * sech2 * du));
    }
  });
}

}  // namespace tessera
