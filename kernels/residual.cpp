#include "kernels/residual.h"

#include "kernels/kernel_util.h"

namespace tessera {
namespace {

void add(const char* op, Tensor& out, const Tensor& a, const Tensor& b) {
  const auto backend = kernels_detail::backend_f32(op, {{"out", out}, {"a", a}, {"b", b}});
  TS_CHECK(out.numel() == a.numel() && a.numel() == b.numel(), op, ": sizes ", out.numel(), ", ",
           a.numel(), ", ", b.numel(), " differ");
  TS_RUN_ON_CUDA(backend, cuda::add(out.data<float>(), a.data<float>(), b.data<float>(),
                                    out.numel(), kernels_detail::kOpStream));
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  const int64_t n = out.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
}

}  // namespace

void residual_forward(Tensor& out, const Tensor& a, const Tensor& b) {
  add("residual_forward", out, a, b);
}

void bias_add(Tensor& x, const Tensor& bias) {
  const auto backend = kernels_detail::backend_f32("bias_add", {{"x", x}, {"bias", bias}});
  const int64_t c = bias.numel();
  TS_CHECK(c > 0 && x.numel() % c == 0, "bias_add: x of ", x.numel(),
           " values is not rows of the bias's ", c);
  TS_RUN_ON_CUDA(backend, cuda::bias_add(x.data<float>(), bias.data<float>(), x.numel() / c, c,
                                         kernels_detail::kOpStream));
  float* px = x.data<float>();
  const float* pb = bias.data<float>();
  const int64_t rows = x.numel() / c;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) px[r * c + j] += pb[j];
}

}  // namespace tessera
