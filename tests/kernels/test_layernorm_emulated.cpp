// The layernorm kernels (kernels/layernorm.cuh) run on the CPU through the SIMT emulation
// (tests/support/simt.h), in CI, without a GPU, against the CPU ops (kernels/layernorm.h): the
// forward that holds the row in registers (C % 4 == 0, C ≤ 2048) and the one that reads it as it
// goes, with and without the fused residual add, f32 and bf16 outputs; the one-pass backward with
// its chunk sums.
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

TEST_F(LayerNormEmulated, BackwardKernelMatchesTheCpu) {
  // The one-pass backward (dinp, the residual gradient added, its bf16 copy; dweight and dbias
  // summed per row chunk in shared memory, then the chunks by add_partials) against the CPU's:
  // rows of 768 and 100, fewer rows than chunks and more than one row a chunk.
  for (const auto& [n, c] : {std::pair<int64_t, int64_t>{37, 768}, {2100, 100}}) {
    SCOPED_TRACE("N " + std::to_string(n) + ", C " + std::to_string(c));
    const Tensor x = random({n, c}, 3.0f), w = random({c}), b = random({c}), dy = random({n, c});
    const Tensor dres = random({n, c}), dw0 = random({c}), db0 = random({c});
    Tensor y = Tensor::empty({n, c}, DType::f32), mean = Tensor::empty({n}, DType::f32),
           rstd = Tensor::empty({n}, DType::f32);
    layernorm_forward(y, mean, rstd, x, w, b);
    Tensor dx = Tensor::empty({n, c}, DType::f32), dw = dw0.to(Device::cpu()),
           db = db0.to(Device::cpu());
    layernorm_backward(dx, dw, db, dy, x, w, mean, rstd, dres);

    Tensor got_dx = Tensor::empty({n, c}, DType::f32),
           got_rounded = Tensor::empty({n, c}, DType::bf16);
    Tensor got_dw = dw0.to(Device::cpu()), got_db = db0.to(Device::cpu());
    constexpr int64_t kChunks = cuda::kLayerNormChunks;
    Tensor partials = Tensor::empty({2 * kChunks * c}, DType::f32);
    testing::poison(got_dx);
    testing::poison(partials);
    auto* rounded = reinterpret_cast<__nv_bfloat16*>(got_rounded.raw());
    simt::launch({static_cast<unsigned>(kChunks), 1, 1}, {cuda_detail::kThreads, 1, 1},
                 cuda::kRowsPerBlock * 2 * c * sizeof(float), [&] {
                   cuda::layernorm_backward_kernel<__nv_bfloat16>(
                       got_dx.data<float>(), rounded, partials.data<float>(), dy.data<float>(),
                       x.data<float>(), w.data<float>(), mean.data<float>(), rstd.data<float>(),
                       dres.data<float>(), n, static_cast<int>(c));
                 });
    const unsigned blocks = cuda_detail::partial_sum_blocks(c);
    for (const auto& [sums, from] :
         {std::pair<Tensor*, int64_t>{&got_dw, 0}, {&got_db, kChunks * c}})
      simt::launch({blocks, 1, 1}, {cuda_detail::kThreads, 1, 1}, 0, [&] {
        cuda_detail::add_partials_kernel(sums->data<float>(), partials.data<float>() + from, c,
                                         static_cast<int>(kChunks));
      });
    EXPECT_LT(testing::rel_error(got_dx, testing::to_f64(dx)), 1e-5) << "dinp";
    EXPECT_LT(testing::rel_error(widened(got_rounded), testing::to_f64(dx)), 1e-2) << "bf16 copy";
    EXPECT_LT(testing::rel_error(got_dw, testing::to_f64(dw)), 1e-5) << "dweight";
    EXPECT_LT(testing::rel_error(got_db, testing::to_f64(db)), 1e-5) << "dbias";
  }
}

}  // namespace
}  // namespace tessera
