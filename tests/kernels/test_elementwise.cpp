// GELU, residual and embedding against float64 references whose gradients are themselves checked
// by finite differences; overwrite/accumulate contracts, determinism and errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "kernels/convert.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/residual.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

using testing::randn;

Tensor poisoned(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::f32);
  testing::poison(t);
  return t;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::vector<double> plus(std::vector<double> a, const std::vector<double>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<double> random_f64(size_t n, std::mt19937_64& rng, double stddev = 1.0) {
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> v(n);
  for (double& e : v) e = dist(rng);
  return v;
}

// ---- GELU ---------------------------------------------------------------------------------------

const double kSqrt2OverPi = std::sqrt(2.0 / M_PI);

std::vector<double> gelu_reference(const std::vector<double>& x) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = 0.5 * x[i] * (1.0 + std::tanh(kSqrt2OverPi * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
  return y;
}

std::vector<double> gelu_reference_backward(const std::vector<double>& dout,
                                            const std::vector<double>& x) {
  std::vector<double> dx(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double th = std::tanh(kSqrt2OverPi * (x[i] + 0.044715 * x[i] * x[i] * x[i]));
    const double du = kSqrt2OverPi * (1.0 + 3.0 * 0.044715 * x[i] * x[i]);
    dx[i] = dout[i] * (0.5 * (1.0 + th) + 0.5 * x[i] * (1.0 - th * th) * du);
  }
  return dx;
}

// Forward and backward match float64 over x ~ N(0, 3) (tanh saturates in the tails); both
// outputs are overwritten.
TEST(Convert, RoundsToNearest16BitAndBack) {
  std::mt19937_64 rng(testing::test_seed());
  Tensor x = Tensor::empty({1000}, DType::f32);
  testing::fill_normal(x, rng, 100.0f);
  x.data<float>()[0] = 1e6f;  // beyond f16's range: +inf there
  for (const DType half : {DType::bf16, DType::f16}) {
    Tensor h = Tensor::empty({1000}, half), back = Tensor::empty({1000}, DType::f32);
    convert(h, x);
    convert(back, h);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = x.data<float>()[i];
      const float want = half == DType::bf16 ? to_float(to_bf16(v)) : to_float(to_f16(v));
      ASSERT_EQ(back.data<float>()[i], want) << dtype_name(half) << " " << v;
      if (i > 0) {
        ASSERT_LE(std::fabs(want - v), std::fabs(v) * (half == DType::bf16 ? 4e-3 : 5e-4));
      }
    }
  }
  EXPECT_TRUE(std::isinf(to_float(to_f16(1e6f))));
  Tensor i32 = Tensor::empty({1000}, DType::i32), small = Tensor::empty({10}, DType::bf16);
  EXPECT_THROW(convert(i32, x), Error);
  EXPECT_THROW(convert(small, x), Error);
}

TEST(Gelu, MatchesReference) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Tensor x = randn({3, 7, 97}, rng, 3.0f), dout = randn({3, 7, 97}, rng);
  Tensor out = poisoned({3, 7, 97}), dinp = poisoned({3, 7, 97});
  gelu_forward(out, x);
  gelu_backward(dinp, dout, x);
  const auto xd = testing::to_f64(x);
  EXPECT_LT(testing::rel_error(out, gelu_reference(xd)), 1e-6);
  EXPECT_LT(testing::rel_error(dinp, gelu_reference_backward(testing::to_f64(dout), xd)), 1e-6);
}

// A 16-bit out or dinp (read by 16-bit GEMMs only) holds the f32 one rounded to nearest even.
TEST(Gelu, SixteenBitOutputsAreTheRoundedF32Ones) {
  std::mt19937_64 rng(testing::test_seed());
  const Tensor x = randn({5, 333}, rng, 3.0f), dout = randn({5, 333}, rng);
  Tensor out = poisoned({5, 333}), dinp = poisoned({5, 333});
  gelu_forward(out, x);
  gelu_backward(dinp, dout, x);
  for (const DType half : {DType::bf16, DType::f16}) {
    for (const auto& [f32, backward] :
         {std::pair<const Tensor*, bool>{&out, false}, {&dinp, true}}) {
      Tensor want = Tensor::empty({5, 333}, half), got = Tensor::empty({5, 333}, half);
      convert(want, *f32);
      if (backward)
        gelu_backward(got, dout, x);
      else
        gelu_forward(got, x);
      EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0)
          << dtype_name(half) << (backward ? " dinp" : " out");
    }
  }
}

// The reference derivative is right: finite differences of Σ dout·gelu(x) in float64.
TEST(Gelu, ReferenceGradientMatchesFiniteDifferences) {
  std::mt19937_64 rng(testing::test_seed());
  const auto x = random_f64(40, rng, 2.5), dout = random_f64(40, rng);
  auto objective = [&](const std::vector<double>& p) { return dot(gelu_reference(p), dout); };
  EXPECT_LT(
      testing::rel_error(testing::finite_diff(objective, x), gelu_reference_backward(dout, x)),
      1e-8);
}

// Element counts must agree and tensors must be f32.
TEST(Gelu, RejectsBadInputs) {
  Tensor x = Tensor::zeros({6}, DType::f32), out5 = Tensor::zeros({5}, DType::f32);
  Tensor out_i32 = Tensor::zeros({6}, DType::i32), undefined;
  EXPECT_THROW(gelu_forward(out5, x), Error);
  EXPECT_THROW(gelu_forward(out_i32, x), Error);
  EXPECT_THROW(gelu_backward(out5, x, x), Error);
  EXPECT_THROW(gelu_backward(undefined, x, x), Error);
  EXPECT_THROW(gelu_backward(x, Tensor::zeros({7}, DType::f32), x), Error);
}

// ---- Residual -----------------------------------------------------------------------------------

// out = a + b is the float64 sum rounded once; the output overwritten; and ∂/∂a, ∂/∂b of
// Σ dout·(a + b) by finite differences are dout.
TEST(Residual, MatchesReference) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Tensor a = randn({4, 33}, rng), b = randn({4, 33}, rng);
  Tensor out = poisoned({4, 33});
  residual_forward(out, a, b);
  const auto ad = testing::to_f64(a), bd = testing::to_f64(b);
  EXPECT_LT(testing::rel_error(out, plus(ad, bd)), 1e-7);
  const auto dout = random_f64(ad.size(), rng);
  auto objective = [&](const std::vector<double>& p) {
    std::vector<double> sum(p.begin(), p.begin() + ad.size());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += p[ad.size() + i];
    return dot(sum, dout);
  };
  std::vector<double> ab = ad, dd = dout;
  ab.insert(ab.end(), bd.begin(), bd.end());
  dd.insert(dd.end(), dout.begin(), dout.end());
  EXPECT_LT(testing::rel_error(testing::finite_diff(objective, ab), dd), 1e-8);
}

// Element counts must agree and tensors must be f32.
TEST(Residual, RejectsBadInputs) {
  Tensor a = Tensor::zeros({6}, DType::f32), out = Tensor::zeros({6}, DType::f32);
  EXPECT_THROW(residual_forward(out, a, Tensor::zeros({5}, DType::f32)), Error);
  EXPECT_THROW(residual_forward(out, a, Tensor::zeros({6}, DType::bf16)), Error);
  EXPECT_THROW(residual_forward(out, Tensor(), a), Error);
}

// ---- Embedding ----------------------------------------------------------------------------------

struct EmbCase {
  int64_t b, t, c, v, max_t;
};

Tensor random_tokens(int64_t b, int64_t t, int64_t vocab, std::mt19937_64& rng) {
  Tensor x = Tensor::empty({b, t}, DType::i32);
  for (int64_t i = 0; i < x.numel(); ++i)
    x.data<int32_t>()[i] = static_cast<int32_t>(rng() % vocab);
  return x;
}

std::vector<double> embedding_reference(const std::vector<double>& wte,
                                        const std::vector<double>& wpe, const Tensor& tokens,
                                        const EmbCase& k) {
  std::vector<double> out(k.b * k.t * k.c);
  for (int64_t i = 0; i < k.b * k.t; ++i)
    for (int64_t j = 0; j < k.c; ++j)
      out[i * k.c + j] = wte[tokens.data<int32_t>()[i] * k.c + j] + wpe[(i % k.t) * k.c + j];
  return out;
}

// dwte[token] += dout row, dwpe[t] += dout row; returned as one vector (dwte then dwpe).
std::vector<double> embedding_reference_backward(const std::vector<double>& dout,
                                                 const Tensor& tokens, const EmbCase& k) {
  std::vector<double> g((k.v + k.max_t) * k.c, 0.0);
  for (int64_t i = 0; i < k.b * k.t; ++i)
    for (int64_t j = 0; j < k.c; ++j) {
      g[tokens.data<int32_t>()[i] * k.c + j] += dout[i * k.c + j];
      g[(k.v + i % k.t) * k.c + j] += dout[i * k.c + j];
    }
  return g;
}

struct EmbRun {
  Tensor tokens, wte, wpe, out, dout, dwte, dwpe, dwte0, dwpe0;
};

// T < maxT and a small vocabulary (repeated tokens); dwte/dwpe pre-filled with random values.
EmbRun run_embedding(const EmbCase& k, std::mt19937_64& rng) {
  EmbRun r{random_tokens(k.b, k.t, k.v, rng),
           randn({k.v, k.c}, rng),
           randn({k.max_t, k.c}, rng),
           poisoned({k.b, k.t, k.c}),
           randn({k.b, k.t, k.c}, rng),
           Tensor::empty({k.v, k.c}, DType::f32),
           Tensor::empty({k.max_t, k.c}, DType::f32),
           randn({k.v, k.c}, rng),
           randn({k.max_t, k.c}, rng)};
  r.dwte.copy_from(r.dwte0);
  r.dwpe.copy_from(r.dwpe0);
  embedding_forward(r.out, r.tokens, r.wte, r.wpe);
  embedding_backward(r.dwte, r.dwpe, r.dout, r.tokens);
  return r;
}

// Forward matches wte[token] + wpe[t]; backward accumulates per-token and per-position sums.
TEST(Embedding, MatchesReference) {
  const EmbCase k{3, 9, 37, 11, 12};
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const EmbRun r = run_embedding(k, rng);
  const auto wte = testing::to_f64(r.wte), wpe = testing::to_f64(r.wpe);
  EXPECT_LT(testing::rel_error(r.out, embedding_reference(wte, wpe, r.tokens, k)), 1e-7);
  const auto g = embedding_reference_backward(testing::to_f64(r.dout), r.tokens, k);
  const std::vector<double> g_wte(g.begin(), g.begin() + k.v * k.c),
      g_wpe(g.begin() + k.v * k.c, g.end());
  EXPECT_LT(testing::rel_error(r.dwte, plus(testing::to_f64(r.dwte0), g_wte)), 1e-6);
  EXPECT_LT(testing::rel_error(r.dwpe, plus(testing::to_f64(r.dwpe0), g_wpe)), 1e-6);
}

// The reference gradient is right: finite differences of Σ dout·out(wte, wpe) in float64.
TEST(Embedding, ReferenceGradientMatchesFiniteDifferences) {
  const EmbCase k{2, 3, 4, 5, 4};
  std::mt19937_64 rng(testing::test_seed());
  const Tensor tokens = random_tokens(k.b, k.t, k.v, rng);
  const auto params = random_f64((k.v + k.max_t) * k.c, rng),
             dout = random_f64(k.b * k.t * k.c, rng);
  auto objective = [&](const std::vector<double>& p) {
    const std::vector<double> wte(p.begin(), p.begin() + k.v * k.c),
        wpe(p.begin() + k.v * k.c, p.end());
    return dot(embedding_reference(wte, wpe, tokens, k), dout);
  };
  EXPECT_LT(testing::rel_error(testing::finite_diff(objective, params),
                               embedding_reference_backward(dout, tokens, k)),
            1e-8);
}

// Bit-identical results for 1, 2 and 3 threads (C = 40 spans three channel slices).
TEST(Embedding, DeterministicAcrossThreadCounts) {
  const EmbCase k{4, 50, 40, 7, 64};
  const uint64_t seed = testing::test_seed();
  std::vector<EmbRun> runs;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::mt19937_64 rng(seed);
    runs.push_back(run_embedding(k, rng));
  }
  omp_set_num_threads(saved);
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_TRUE(bit_equal(runs[0].out, runs[i].out));
    EXPECT_TRUE(bit_equal(runs[0].dwte, runs[i].dwte));
    EXPECT_TRUE(bit_equal(runs[0].dwpe, runs[i].dwpe));
  }
}

// Out-of-range tokens, T > maxT, wrong dtypes and mismatched widths throw Error.
TEST(Embedding, RejectsBadInputs) {
  const auto f32 = [](const Shape& s) { return Tensor::zeros(s, DType::f32); };
  Tensor wte = f32({5, 4}), wpe = f32({3, 4}), out = f32({1, 3, 4}), dout = f32({1, 3, 4});
  Tensor tokens = Tensor::zeros({1, 3}, DType::i32);
  EXPECT_NO_THROW(embedding_forward(out, tokens, wte, wpe));
  for (int32_t bad : {-1, 5}) {
    tokens.data<int32_t>()[1] = bad;
    EXPECT_THROW(embedding_forward(out, tokens, wte, wpe), Error) << bad;
    EXPECT_THROW(embedding_backward(wte, wpe, dout, tokens), Error) << bad;
  }
  Tensor long_out = f32({1, 4, 4});
  EXPECT_THROW(embedding_forward(long_out, Tensor::zeros({1, 4}, DType::i32), wte, wpe), Error);
  const Tensor ok_tokens = Tensor::zeros({1, 3}, DType::i32);
  EXPECT_THROW(embedding_forward(out, Tensor::zeros({1, 3}, DType::f32), wte, wpe), Error);
  EXPECT_THROW(embedding_forward(out, Tensor::zeros({3}, DType::i32), wte, wpe), Error);
  Tensor wide_out = f32({1, 3, 5});
  EXPECT_THROW(embedding_forward(wide_out, ok_tokens, wte, wpe), Error);
  EXPECT_THROW(embedding_forward(out, ok_tokens, wte, f32({3, 2})), Error);  // wpe narrower than C
  EXPECT_THROW(embedding_forward(out, ok_tokens, Tensor::zeros({5, 4}, DType::bf16), wpe), Error);
  Tensor narrow_dwpe = f32({3, 2});
  EXPECT_THROW(embedding_backward(wte, narrow_dwpe, dout, ok_tokens), Error);
  EXPECT_THROW(embedding_backward(wte, wpe, f32({1, 3, 5}), ok_tokens), Error);
}

}  // namespace
}  // namespace tessera
