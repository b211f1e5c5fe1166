// The fp32 attention kernels (kernels/attention_fp32.cuh, train.precision: fp32 on CUDA) run on
// the CPU through the SIMT emulation (tests/support/simt.h), in CI, without a GPU: forward, D, dq
// and dk/dv against the CPU's attention (kernels/attention.h) to 1e-5, head sizes 16 to 128,
// lengths off the 8-row blocks and 32-row tiles.
#include "tests/support/simt.h"  // first: the built-ins the kernels use

#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "kernels/attention.h"
#include "kernels/attention_fp32.cuh"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

class AttentionEmulated : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{testing::test_seed()};

  Tensor random(const Shape& shape) { return testing::randn(shape, rng_); }
};

TEST_F(AttentionEmulated, Fp32KernelsMatchTheCpu) {
  for (const auto& [b, t, c, nh] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 37, 64, 4},
                                    {1, 70, 256, 2},
                                    {1, 41, 128, 1}}) {
    SCOPED_TRACE("T " + std::to_string(t) + ", hs " + std::to_string(c / nh));
    const Tensor qkv = random({b, t, 3 * c}), dy = random({b, t, c});
    Tensor y = Tensor::empty({b, t, c}, DType::f32), lse = Tensor::empty({b, nh, t}, DType::f32);
    Tensor dqkv = Tensor::empty({b, t, 3 * c}, DType::f32);
    attention_forward(y, lse, qkv, nh);
    attention_backward(dqkv, dy, qkv, y, lse, nh);

    Tensor got_y = Tensor::empty({b, t, c}, DType::f32),
           got_lse = Tensor::empty({b, nh, t}, DType::f32);
    Tensor got_dqkv = Tensor::empty({b, t, 3 * c}, DType::f32);
    Tensor delta = Tensor::empty({b, nh, t}, DType::f32);
    for (Tensor* x : {&got_y, &got_lse, &got_dqkv, &delta}) testing::poison(*x);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c / nh));
    const simt::Dim3 grid{static_cast<unsigned>((t + cuda::kWarps - 1) / cuda::kWarps),
                          static_cast<unsigned>(b * nh), 1};
    constexpr unsigned block = cuda_detail::kThreads;
    simt::launch(grid, block, 0, [&] {
      cuda::attention_forward_kernel(got_y.data<float>(), got_lse.data<float>(), qkv.data<float>(),
                                     t, c, nh, scale);
    });
    simt::launch(grid, block, 0, [&] {
      cuda::attention_delta_kernel(delta.data<float>(), dy.data<float>(), got_y.data<float>(), t, c,
                                   nh);
    });
    simt::launch(grid, block, 0, [&] {
      cuda::attention_dq_kernel(got_dqkv.data<float>(), dy.data<float>(), qkv.data<float>(),
                                got_lse.data<float>(), delta.data<float>(), t, c, nh, scale);
    });
    simt::launch(grid, block, 0, [&] {
      cuda::attention_dkv_kernel(got_dqkv.data<float>(), dy.data<float>(), qkv.data<float>(),
                                 got_lse.data<float>(), delta.data<float>(), t, c, nh, scale);
    });
    EXPECT_LT(testing::rel_error(got_y, testing::to_f64(y)), 1e-5) << "out";
    EXPECT_LT(testing::rel_error(got_lse, testing::to_f64(lse)), 1e-5) << "lse";
    EXPECT_LT(testing::rel_error(got_dqkv, testing::to_f64(dqkv)), 1e-5) << "dqkv";
  }
}

}  // namespace
}  // namespace tessera
