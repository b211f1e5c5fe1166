// The AdamW and gradient-norm kernels (kernels/adamw.cuh) run on the CPU through the SIMT emulation
// (tests/support/simt.h), in CI, without a GPU: a multi-tensor AdamW step over sets of several
// lengths, with and without weight decay, against the CPU's adamw_update; the per-block float64
// norm partials against the CPU's squared norm.
#include "tests/support/simt.h"  // first: the built-ins the kernels use

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/adamw.cuh"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

class AdamWEmulated : public ::testing::Test {
 protected:
  std::mt19937_64 rng_{testing::test_seed()};

  Tensor random(int64_t n, float lo, float hi) {
    Tensor x = Tensor::empty({n}, DType::f32);
    testing::fill_uniform(x, rng_, lo, hi);
    return x;
  }
};

TEST_F(AdamWEmulated, StepAndNormMatchTheCpu) {
  const std::vector<int64_t> lengths{1000, 37, 513};
  const AdamWStep step{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.5f};
  std::vector<AdamWTensors> want, got;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const int64_t n = lengths[i];
    const Tensor p = random(n, -1, 1), m = random(n, -0.1f, 0.1f), v = random(n, 0, 0.01f),
                 g = random(n, -1, 1);
    for (auto* sets : {&want, &got})
      sets->push_back({p.to(Device::cpu()), m.to(Device::cpu()), v.to(Device::cpu()), g,
                       /*decay=*/i != 1});
  }
  adamw_update(want, step);

  // The launcher's arguments (kernels/adamw.cpp): bias corrections in float64, decay per set.
  const double bc1 = 1.0 - std::pow(double{step.beta1}, static_cast<double>(step.t));
  const double bc2 = 1.0 - std::pow(double{step.beta2}, static_cast<double>(step.t));
  cuda::AdamWBatch batch{};
  for (size_t s = 0; s < got.size(); ++s) {
    batch.set[s] = {got[s].params.data<float>(),
                    got[s].m.data<float>(),
                    got[s].v.data<float>(),
                    got[s].grads.data<float>(),
                    lengths[s],
                    got[s].decay ? 1.0f - step.lr * step.weight_decay : 1.0f};
    batch.start[s + 1] = batch.start[s] + lengths[s];
  }
  const int count = static_cast<int>(got.size());
  simt::launch({cuda_detail::blocks_for(batch.start[count]), 1, 1}, cuda_detail::kThreads, 0, [&] {
    cuda::adamw_kernel(batch, count, step.beta1, step.beta2, step.eps, step.grad_scale,
                       static_cast<float>(step.lr / bc1), static_cast<float>(std::sqrt(bc2)));
  });
  for (size_t s = 0; s < got.size(); ++s) {
    SCOPED_TRACE("set " + std::to_string(s));
    // The same expressions, compiled apart (contractions into FMAs may differ): to 1e-6.
    EXPECT_LT(testing::rel_error(got[s].params, testing::to_f64(want[s].params)), 1e-6) << "p";
    EXPECT_LT(testing::rel_error(got[s].m, testing::to_f64(want[s].m)), 1e-6) << "m";
    EXPECT_LT(testing::rel_error(got[s].v, testing::to_f64(want[s].v)), 1e-6) << "v";
  }

  cuda::NormBatch norms{};
  std::vector<Tensor> grads;
  for (size_t s = 0; s < got.size(); ++s) {
    norms.grads[s] = got[s].grads.data<float>();
    norms.n[s] = lengths[s];
    grads.push_back(got[s].grads);
  }
  std::vector<double> partials(count * cuda::kNormPartials,
                               std::numeric_limits<double>::quiet_NaN());
  simt::launch({cuda::kNormPartials, static_cast<unsigned>(count), 1}, cuda_detail::kThreads, 0,
               [&] { cuda::norm_partials_kernel(partials.data(), norms); });
  double total = 0.0;
  for (const double x : partials) total += x;
  const double expected = grad_norm_squared(grads);
  EXPECT_NEAR(total, expected, 1e-12 * expected);
}

}  // namespace
}  // namespace tessera
