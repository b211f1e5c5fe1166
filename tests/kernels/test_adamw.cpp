// AdamW against a float64 torch.optim.AdamW over several steps; the global gradient norm (exact in
// float64, deterministic) and the clip_grad_norm_ coefficient; errors.
#include "kernels/adamw.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

using testing::randn;

struct State {
  std::vector<double> p, m, v;
};

// One step of torch.optim.AdamW (amsgrad off) in float64 on grad_scale·grads, written as torch's
// _single_tensor_adamw: decay, lerp/addcmul moments, bias corrections from Python floats.
void reference_step(State& s, const std::vector<double>& grads, const AdamWStep& h) {
  const double lr = h.lr, b1 = h.beta1, b2 = h.beta2, eps = h.eps, wd = h.weight_decay;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(h.t));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(h.t));
  for (size_t i = 0; i < s.p.size(); ++i) {
    const double g = grads[i] * double{h.grad_scale};
    s.p[i] *= 1.0 - lr * wd;
    s.m[i] += (g - s.m[i]) * (1.0 - b1);
    s.v[i] = s.v[i] * b2 + (1.0 - b2) * g * g;
    s.p[i] -= lr / bc1 * s.m[i] / (std::sqrt(s.v[i]) / std::sqrt(bc2) + eps);
  }
}

void append(std::vector<double>& to, const std::vector<double>& x) {
  to.insert(to.end(), x.begin(), x.end());
}

std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// Five steps from zero moments with grad_scale != 1 over three tensors in one multi-tensor call
// (the middle one of one element, the last without weight decay): params, m and v follow the
// float64 trajectory, and each step's update matches the float64 update from the same state
// (params ~ N(0, 0.05) so that the update is not lost in the rounding of p).
TEST(AdamW, MatchesTorchAdamWOverSteps) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<int64_t> sizes{1003, 1, 517};
  const std::vector<bool> decays{true, true, false};
  std::vector<AdamWTensors> sets;
  std::vector<State> refs;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const int64_t n = sizes[k];
    sets.push_back({randn({n}, rng, 0.05f), Tensor::zeros({n}, DType::f32),
                    Tensor::zeros({n}, DType::f32), Tensor(), decays[k]});
    refs.push_back({testing::to_f64(sets[k].params), std::vector<double>(n, 0.0),
                    std::vector<double>(n, 0.0)});
  }
  for (int64_t t = 1; t <= 5; ++t) {
    const AdamWStep h{/*lr=*/1e-2f,          /*beta1=*/0.9f, /*beta2=*/0.999f,
                      /*eps=*/1e-8f,
                      /*weight_decay=*/0.1f, /*t=*/t,        /*grad_scale=*/0.37f};
    std::vector<State> from_kernel;
    for (size_t k = 0; k < sets.size(); ++k) {
      sets[k].grads = randn({sizes[k]}, rng, 3.0f);
      const auto g = testing::to_f64(sets[k].grads);
      AdamWStep hk = h;
      hk.weight_decay = decays[k] ? h.weight_decay : 0.0f;
      from_kernel.push_back({testing::to_f64(sets[k].params), testing::to_f64(sets[k].m),
                             testing::to_f64(sets[k].v)});
      reference_step(from_kernel[k], g, hk);
      reference_step(refs[k], g, hk);
    }
    std::vector<double> p_before;
    for (const AdamWTensors& s : sets) append(p_before, testing::to_f64(s.params));
    adamw_update(sets, h);
    // All tensors as one vector: a tensor of one element near 0 would make its own relative
    // error meaningless, while a wrong tensor (an offset, a missing or extra weight decay) moves
    // its elements by a share of an update, far beyond these bounds.
    std::vector<double> p, m, v, want_p, want_m, want_v, want_step;
    for (size_t k = 0; k < sets.size(); ++k) {
      append(p, testing::to_f64(sets[k].params));
      append(m, testing::to_f64(sets[k].m));
      append(v, testing::to_f64(sets[k].v));
      append(want_p, refs[k].p);
      append(want_m, refs[k].m);
      append(want_v, refs[k].v);
      append(want_step, from_kernel[k].p);
    }
    SCOPED_TRACE("step " + std::to_string(t));
    EXPECT_LT(testing::rel_error(p, want_p), 1e-6);
    EXPECT_LT(testing::rel_error(m, want_m), 1e-6);
    EXPECT_LT(testing::rel_error(v, want_v), 1e-6);
    // The update alone, to 2e-6: f32 bias corrections (1 − β₂ᵗ) would be off by ~3e-6 here.
    EXPECT_LT(testing::rel_error(minus(p, p_before), minus(want_step, p_before)), 2e-6);
  }
}

// Element counts, the 1-based step and dtypes are checked.
TEST(AdamW, RejectsBadInputs) {
  const auto set = [](int64_t n, int64_t n_v, DType grad_type) {
    return std::vector<AdamWTensors>{
        {Tensor::zeros({8}, DType::f32), Tensor::zeros({8}, DType::f32),
         Tensor::zeros({8}, DType::f32), Tensor::zeros({8}, DType::f32)},
        {Tensor::zeros({8}, DType::f32), Tensor::zeros({8}, DType::f32),
         Tensor::zeros({n_v}, DType::f32), Tensor::zeros({n}, grad_type)}};
  };
  const AdamWStep h{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 1.0f};
  auto good = set(8, 8, DType::f32), short_v = set(8, 7, DType::f32),
       long_g = set(9, 8, DType::f32), bf16_g = set(8, 8, DType::bf16);
  EXPECT_NO_THROW(adamw_update(good, h));
  EXPECT_THROW(adamw_update(short_v, h), Error);
  EXPECT_THROW(adamw_update(long_g, h), Error);
  EXPECT_THROW(adamw_update(bf16_g, h), Error);
  AdamWStep zero_step = h;
  zero_step.t = 0;
  EXPECT_THROW(adamw_update(good, zero_step), Error);
  EXPECT_THROW(grad_norm_squared({Tensor::zeros({8}, DType::i32)}), Error);
  EXPECT_THROW(grad_norm_squared({Tensor()}), Error);
}

// Σ g² equals the float64 sum (products of floats are exact in float64) for sizes below, at and
// not a multiple of the chunk count; empty gives 0.
TEST(GradNorm, MatchesFloat64Sum) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int64_t n : {1, 5, 64, 100003}) {
    const Tensor g = randn({n}, rng, 0.01f);
    double expected = 0.0;
    for (double x : testing::to_f64(g)) expected += x * x;
    EXPECT_NEAR(grad_norm_squared({g}), expected, 1e-12 * expected) << n;
  }
  EXPECT_EQ(grad_norm_squared({Tensor::zeros({0}, DType::f32)}), 0.0);
  EXPECT_EQ(grad_norm_squared({}), 0.0);
  // Several tensors: the sum of their sums.
  const Tensor a = randn({333}, rng, 1.0f), b = randn({70000}, rng, 0.1f);
  EXPECT_EQ(grad_norm_squared({a, b}), grad_norm_squared({a}) + grad_norm_squared({b}));
  EXPECT_THROW(grad_norm_squared({a, Tensor::zeros({3}, DType::i32)}), Error);
}

// Bit-identical for 1, 2 and 3 threads.
TEST(GradNorm, DeterministicAcrossThreadCounts) {
  std::mt19937_64 rng(testing::test_seed());
  const Tensor g = randn({100003}, rng);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = grad_norm_squared({g});
  for (int threads : {2, 3}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(grad_norm_squared({g}), one) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

// min(1, max_norm / (norm + 1e-6)); max_norm <= 0 disables clipping.
TEST(ClipCoefficient, FollowsClipGradNorm) {
  EXPECT_FLOAT_EQ(clip_coefficient(10.0, 1.0f), static_cast<float>(1.0 / (10.0 + 1e-6)));
  EXPECT_FLOAT_EQ(clip_coefficient(4.0, 3.0f), static_cast<float>(3.0 / (4.0 + 1e-6)));
  EXPECT_LT(clip_coefficient(1.0, 1.0f), 1.0f);  // the 1e-6 keeps norm == max_norm just below 1
  EXPECT_EQ(clip_coefficient(0.5, 1.0f), 1.0f);
  EXPECT_EQ(clip_coefficient(0.0, 1.0f), 1.0f);
  EXPECT_EQ(clip_coefficient(1e9, 0.0f), 1.0f);
  EXPECT_EQ(clip_coefficient(1e9, -1.0f), 1.0f);
}

}  // namespace
}  // namespace tessera
