#include "kernels/residual.h"

#include "kernels/kernel_util.h"

namespace tessera {
namespace {

void add(const char* op, Tensor& out, const Tensor& a, const Tensor& b) {
  kernels_detail::require_cpu_f32(op, "out", out);
  kernels_detail::require_cpu_f32(op, "a", a);
  kernels_detail::require_cpu_f32(op, "b", b);
  TS_CHECK(out.numel() == a.numel() && a.numel() == b.numel(), op, ": sizes ", out.numel(), ", ",
           a.numel(), ", ", b.numel(), " differ");
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

void residual_backward(Tensor& dx, const Tensor& dy, const Tensor& d_branch) {
  add("residual_backward", dx, dy, d_branch);
}

void bias_add(Tensor& x, const Tensor& bias) {
  kernels_detail::require_cpu_f32("bias_add", "x", x);
  kernels_detail::require_cpu_f32("bias_add", "bias", bias);
  const int64_t c = bias.numel();
  TS_CHECK(c > 0 && x.numel() % c == 0, "bias_add: x of ", x.numel(),
           " values is not rows of the bias's ", c);
  float* px = x.data<float>();
  const float* pb = bias.data<float>();
  const int64_t rows = x.numel() / c;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < c; ++j) px[r * c + j] += pb[j];
}

}  // namespace tessera
