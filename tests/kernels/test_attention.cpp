// Causal attention against a float64 reference (full softmax per head), whose gradient is itself
// checked by finite differences; tiles, causal masking at partial tiles, and determinism.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

struct Case {
  int64_t b, t, c, nh;
};

// Reference forward in float64: out (B, T, C) from qkv (B, T, 3C).
std::vector<double> reference_forward(const std::vector<double>& qkv, const Case& k) {
  const int64_t hs = k.c / k.nh, ld = 3 * k.c;
  std::vector<double> out(k.b * k.t * k.c, 0.0), p(k.t);
  for (int64_t b = 0; b < k.b; ++b)
    for (int64_t h = 0; h < k.nh; ++h)
      for (int64_t i = 0; i < k.t; ++i) {
        const double* q = &qkv[(b * k.t + i) * ld + h * hs];
        double mx = -1e300, sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          const double* kk = &qkv[(b * k.t + j) * ld + k.c + h * hs];
          double s = 0.0;
          for (int64_t e = 0; e < hs; ++e) s += q[e] * kk[e];
          p[j] = s / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
        double* o = &out[(b * k.t + i) * k.c + h * hs];
        for (int64_t j = 0; j <= i; ++j) {
          const double* v = &qkv[(b * k.t + j) * ld + 2 * k.c + h * hs];
          for (int64_t e = 0; e < hs; ++e) o[e] += p[j] / sum * v[e];
        }
      }
  return out;
}

// Reference backward in float64 (the textbook softmax gradient, no tiling): dqkv from dout.
std::vector<double> reference_backward(const std::vector<double>& qkv,
                                       const std::vector<double>& dout, const Case& k) {
  const int64_t hs = k.c / k.nh, ld = 3 * k.c;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  std::vector<double> dqkv(qkv.size(), 0.0), p(k.t), dp(k.t);
  for (int64_t b = 0; b < k.b; ++b)
    for (int64_t h = 0; h < k.nh; ++h)
      for (int64_t i = 0; i < k.t; ++i) {
        const int64_t qo = (b * k.t + i) * ld + h * hs;
        double mx = -1e300, sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0.0;
          for (int64_t e = 0; e < hs; ++e)
            s += qkv[qo + e] * qkv[(b * k.t + j) * ld + k.c + h * hs + e];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t j = 0; j <= i; ++j) p[j] /= sum;
        const double* g = &dout[(b * k.t + i) * k.c + h * hs];
        double dot = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          const int64_t vo = (b * k.t + j) * ld + 2 * k.c + h * hs;
          dp[j] = 0.0;
          for (int64_t e = 0; e < hs; ++e) {
            dp[j] += g[e] * qkv[vo + e];
            dqkv[vo + e] += p[j] * g[e];
          }
          dot += p[j] * dp[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[j] * (dp[j] - dot) * scale;
          const int64_t ko = (b * k.t + j) * ld + k.c + h * hs;
          for (int64_t e = 0; e < hs; ++e) {
            dqkv[qo + e] += ds * qkv[ko + e];
            dqkv[ko + e] += ds * qkv[qo + e];
          }
        }
      }
  return dqkv;
}

struct AttentionRun {
  Tensor qkv, out, lse, dout, dqkv;
};

AttentionRun run_kernel(const Case& k, std::mt19937_64& rng) {
  AttentionRun r{
      Tensor::empty({k.b, k.t, 3 * k.c}, DType::f32), Tensor::empty({k.b, k.t, k.c}, DType::f32),
      Tensor::empty({k.b, k.nh, k.t}, DType::f32), Tensor::empty({k.b, k.t, k.c}, DType::f32),
      Tensor::empty({k.b, k.t, 3 * k.c}, DType::f32)};
  testing::fill_normal(r.qkv, rng);
  testing::fill_normal(r.dout, rng);
  testing::poison(r.out);
  testing::poison(r.lse);
  testing::poison(r.dqkv);  // backward overwrites: no NaN may survive
  attention_forward(r.out, r.lse, r.qkv, k.nh);
  attention_backward(r.dqkv, r.dout, r.qkv, r.out, r.lse, k.nh);
  return r;
}

class AttentionVsReference : public ::testing::TestWithParam<Case> {};

// Forward and backward match float64 for T below, at and across tile boundaries.
TEST_P(AttentionVsReference, ForwardAndBackward) {
  const Case k = GetParam();
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const AttentionRun r = run_kernel(k, rng);
  const std::vector<double> qkv = testing::to_f64(r.qkv), dout = testing::to_f64(r.dout);
  EXPECT_LT(testing::rel_error(r.out, reference_forward(qkv, k)), 1e-5);
  EXPECT_LT(testing::rel_error(r.dqkv, reference_backward(qkv, dout, k)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionVsReference,
                         ::testing::Values(Case{2, 7, 16, 2}, Case{1, 64, 32, 4},
                                           Case{2, 150, 24, 3}, Case{1, 200, 64, 1}));

// The log-sum-exp saved for backward is log Σ_j exp(q·k_j/√hs) over the causal keys.
TEST(Attention, LogSumExp) {
  const Case k{1, 70, 8, 2};
  std::mt19937_64 rng(testing::test_seed());
  const AttentionRun r = run_kernel(k, rng);
  const std::vector<double> qkv = testing::to_f64(r.qkv);
  const int64_t hs = k.c / k.nh;
  for (int64_t h = 0; h < k.nh; ++h)
    for (int64_t i = 0; i < k.t; ++i) {
      double sum = 0.0;
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0.0;
        for (int64_t e = 0; e < hs; ++e)
          s += qkv[i * 3 * k.c + h * hs + e] * qkv[j * 3 * k.c + k.c + h * hs + e];
        sum += std::exp(s / std::sqrt(static_cast<double>(hs)));
      }
      EXPECT_NEAR(r.lse.data<float>()[h * k.t + i], std::log(sum),
                  1e-5 * (1 + std::abs(std::log(sum))));
    }
}

// The reference gradient is right: finite differences of Σ dout·out(qkv) in float64.
TEST(Attention, ReferenceGradientMatchesFiniteDifferences) {
  const Case k{1, 5, 6, 2};
  std::mt19937_64 rng(testing::test_seed());
  std::normal_distribution<double> n01;
  std::vector<double> qkv(k.b * k.t * 3 * k.c), dout(k.b * k.t * k.c);
  for (double& v : qkv) v = n01(rng);
  for (double& v : dout) v = n01(rng);
  auto objective = [&](const std::vector<double>& x) {
    const std::vector<double> out = reference_forward(x, k);
    double s = 0.0;
    for (size_t i = 0; i < out.size(); ++i) s += out[i] * dout[i];
    return s;
  };
  EXPECT_LT(
      testing::rel_error(testing::finite_diff(objective, qkv), reference_backward(qkv, dout, k)),
      1e-7);
}

// Bit-identical results for 1, 2 and 3 threads.
TEST(Attention, DeterministicAcrossThreadCounts) {
  const Case k{2, 130, 32, 2};
  const uint64_t seed = testing::test_seed();
  std::vector<AttentionRun> runs;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::mt19937_64 rng(seed);
    runs.push_back(run_kernel(k, rng));
  }
  omp_set_num_threads(saved);
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_EQ(std::memcmp(runs[0].out.raw(), runs[i].out.raw(), runs[0].out.nbytes()), 0);
    EXPECT_EQ(std::memcmp(runs[0].dqkv.raw(), runs[i].dqkv.raw(), runs[0].dqkv.nbytes()), 0);
  }
}

// Shapes that do not fit are errors, not out-of-bounds reads.
TEST(Attention, RejectsBadShapes) {
  Tensor qkv = Tensor::zeros({1, 4, 24}, DType::f32), out = Tensor::zeros({1, 4, 8}, DType::f32);
  Tensor lse = Tensor::zeros({1, 2, 4}, DType::f32);
  EXPECT_THROW(attention_forward(out, lse, qkv, 3), Error);  // C = 8 not divisible by 3 heads
  Tensor bad_qkv = Tensor::zeros({1, 4, 25}, DType::f32);
  EXPECT_THROW(attention_forward(out, lse, bad_qkv, 2), Error);
  Tensor bad_lse = Tensor::zeros({1, 4, 2}, DType::f32);
  EXPECT_THROW(attention_forward(out, bad_lse, qkv, 2), Error);
  Tensor i32 = Tensor::zeros({1, 4, 24}, DType::i32);
  EXPECT_THROW(attention_forward(out, lse, i32, 2), Error);
}

// 16-bit compute on the CPU rounds what the tensor-core kernels round (q, k, v, dout, P, dS; the
// reference of the CUDA path): within 1e-2 of float64 in bf16 (seen: 2.5e-3 for out, 3.7e-3 for
// dqkv), 2e-3 in f16 (seen: 4.5e-4), and not equal to fp32. A 16-bit out holds the same
// computation's output rounded, and backward from it into a 16-bit dqkv (out's type) stays as
// close to float64.
TEST(Attention, SixteenBitComputeOnTheCpu) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int64_t b = 2, t = 70, c = 64, nh = 2;
  Tensor qkv = Tensor::empty({b, t, 3 * c}, DType::f32), dy = Tensor::empty({b, t, c}, DType::f32);
  testing::fill_normal(qkv, rng);
  testing::fill_normal(dy, rng);
  const Case k{b, t, c, nh};
  const std::vector<double> ref_out = reference_forward(testing::to_f64(qkv), k);
  const std::vector<double> ref_dqkv =
      reference_backward(testing::to_f64(qkv), testing::to_f64(dy), k);
  for (const DType half : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(half));
    Tensor out = Tensor::empty({b, t, c}, DType::f32), lse = Tensor::empty({b, nh, t}, DType::f32);
    Tensor dqkv = Tensor::empty({b, t, 3 * c}, DType::f32);
    attention_forward(out, lse, qkv, nh, half);
    attention_backward(dqkv, dy, qkv, out, lse, nh, half);
    const double tol = half == DType::bf16 ? 1e-2 : 2e-3;
    for (const auto& [got, want] :
         {std::pair<const Tensor*, const std::vector<double>*>{&out, &ref_out},
          {&dqkv, &ref_dqkv}}) {
      const double err = testing::rel_error(*got, *want);
      EXPECT_LT(err, tol);
      EXPECT_GT(err, 1e-6);  // the rounding ran
    }
    Tensor out16 = Tensor::empty({b, t, c}, half), want16 = Tensor::empty({b, t, c}, half);
    Tensor lse16 = Tensor::empty({b, nh, t}, DType::f32);
    attention_forward(out16, lse16, qkv, nh, half);
    convert(want16, out);
    EXPECT_EQ(std::memcmp(out16.raw(), want16.raw(), want16.nbytes()), 0);
    EXPECT_EQ(std::memcmp(lse16.raw(), lse.raw(), lse.nbytes()), 0);
    Tensor dqkv16 = Tensor::empty({b, t, 3 * c}, half),
           dqkv16_f32 = Tensor::empty(qkv.shape(), DType::f32);
    attention_backward(dqkv16, dy, qkv, out16, lse16, nh, half);
    convert(dqkv16_f32, dqkv16);
    EXPECT_LT(testing::rel_error(dqkv16_f32, ref_dqkv), tol);
    EXPECT_THROW(attention_backward(dqkv, dy, qkv, out16, lse16, nh, half), Error);  // types differ
    // A 16-bit out is of the products' type (the fp32 engine writes f32).
    EXPECT_THROW(attention_forward(out16, lse16, qkv, nh), Error);
    EXPECT_THROW(
        attention_forward(out16, lse16, qkv, nh, half == DType::bf16 ? DType::f16 : DType::bf16),
        Error);
  }
}

}  // namespace
}  // namespace tessera
