// The layernorm forward kernels (kernels/layernorm.cuh) run on the CPU through the SIMT emulation
// (tests/support/simt.h), in CI, without a GPU: the one that holds the row in registers (C % 4 ==
// 0, C ≤ 2048) and the one that reads it as it goes, with and without the fused residual add, f32
// and bf16 outputs, against the CPU ops (kernels/layernorm.h).
#include "tests/support/simt.h"  // first: the built-ins the kernels use

#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "kernels/layernorm.cuh"
#include "tests/support/numeric.h"
#include "tests/support/widened.h"

namespace tessera {
namespace {

using testing::widened;

class LayerNormEmulated : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{testing::test_seed()};

  Tensor random(const Shape& shape, float stddev = 1.0f) {
    Tensor x = Tensor::empty(shape, DType::f32);
    testing::fill_normal(x, rng_, stddev);
    return x;
  }
};

// out, mean, rstd (and res with add) of one kernel (Y: out's CUDA type) against the CPU's.
template <class Y>
void check(bool in_registers, const Tensor& x, const Tensor& add, const Tensor& w, const Tensor& b,
           DType out_type) {
  const int64_t n = x.size(0), c = x.size(1);
  Tensor want = Tensor::empty({n, c}, out_type), mean = Tensor::empty({n}, DType::f32),
         rstd = Tensor::empty({n}, DType::f32), res = Tensor::empty({n, c}, DType::f32);
  if (add.defined())
    residual_layernorm_forward(res, want, mean, rstd, x, add, w, b);
  else
    layernorm_forward(want, mean, rstd, x, w, b);

  Tensor got = Tensor::empty({n, c}, out_type), got_mean = Tensor::empty({n}, DType::f32),
         got_rstd = Tensor::empty({n}, DType::f32), got_res = Tensor::empty({n, c}, DType::f32);
  for (Tensor* t : {&got_mean, &got_rstd, &got_res}) testing::poison(*t);
  Y* out = reinterpret_cast<Y*>(got.raw());
  const float* a = add.defined() ? add.data<float>() : nullptr;
  simt::launch({static_cast<unsigned>((n + cuda::kRowsPerBlock - 1) / cuda::kRowsPerBlock), 1, 1},
               {cuda_detail::kThreads, 1, 1}, 0, [&] {
                 auto* kernel = in_registers ? cuda::layernorm_forward_row_kernel<Y>
                                             : cuda::layernorm_forward_kernel<Y>;
                 kernel(out, got_mean.data<float>(), got_rstd.data<float>(), got_res.data<float>(),
                        x.data<float>(), a, w.data<float>(), b.data<float>(), n,
                        static_cast<int>(c));
               });
  const double tol = out_type == DType::f32 ? 1e-5 : 1e-2;
  EXPECT_LT(testing::rel_error(widened(got), testing::to_f64(widened(want))), tol) << "out";
  EXPECT_LT(testing::rel_error(got_mean, testing::to_f64(mean)), 1e-5) << "mean";
  EXPECT_LT(testing::rel_error(got_rstd, testing::to_f64(rstd)), 1e-5) << "rstd";
  if (add.defined()) {
    EXPECT_EQ(testing::to_f64(got_res), testing::to_f64(res)) << "residual";
  }
}

TEST_F(LayerNormEmulated, ForwardKernelsMatchTheCpu) {
  // Rows of 768 (6 vectors a lane), 100 (part of the lanes) and 2048 (every vector) in
  // registers; 770 and 2 read as they go; with the residual add and without; f32 and bf16 out.
  for (const auto& [n, c, in_registers] : {std::tuple<int64_t, int64_t, bool>{37, 768, true},
                                           {20, 100, true},
                                           {9, 2048, true},
                                           {11, 770, false},
                                           {5, 2, false}})
    for (const bool with_add : {false, true})
      for (const DType out_type : {DType::f32, DType::bf16}) {
        SCOPED_TRACE("C " + std::to_string(c) + (with_add ? ", residual add, " : ", ") +
                     dtype_name(out_type) + " out");
        const Tensor x = random({n, c}, 3.0f), w = random({c}), b = random({c});
        const Tensor add = with_add ? random({n, c}) : Tensor();
        if (out_type == DType::f32)
          check<float>(in_registers, x, add, w, b, out_type);
        else
          check<__nv_bfloat16>(in_registers, x, add, w, b, out_type);
      }
}

}  // namespace
}  // namespace tessera
