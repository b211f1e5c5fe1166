// LayerNorm against a float64 reference whose gradient is itself checked by finite differences;
// the accumulate/overwrite contracts, determinism of the dweight/dbias reduction, and errors.
#include "kernels/layernorm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "kernels/convert.h"
#include "kernels/residual.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

struct Case {
  int64_t b, t, c;  // inp (B, T, C); N = B·T rows
  int64_t n() const { return b * t; }
};

void PrintTo(const Case& k, std::ostream* os) {
  *os << "B=" << k.b << " T=" << k.t << " C=" << k.c;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::vector<double> plus(std::vector<double> a, const std::vector<double>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

struct Forward {
  std::vector<double> out, mean, rstd;
};

Forward reference_forward(const std::vector<double>& x, const std::vector<double>& w,
                          const std::vector<double>& b, int64_t n, int64_t c) {
  Forward f{std::vector<double>(n * c), std::vector<double>(n), std::vector<double>(n)};
  for (int64_t i = 0; i < n; ++i) {
    double m = 0.0, var = 0.0;
    for (int64_t j = 0; j < c; ++j) m += x[i * c + j] / c;
    for (int64_t j = 0; j < c; ++j) var += (x[i * c + j] - m) * (x[i * c + j] - m) / c;
    const double r = 1.0 / std::sqrt(var + double{kLayerNormEps});
    for (int64_t j = 0; j < c; ++j) f.out[i * c + j] = (x[i * c + j] - m) * r * w[j] + b[j];
    f.mean[i] = m;
    f.rstd[i] = r;
  }
  return f;
}

struct Grads {
  std::vector<double> dinp, dweight, dbias;
};

// Textbook LayerNorm backward: dx = r·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)), dx̂ = dout·w.
Grads reference_backward(const std::vector<double>& dout, const std::vector<double>& x,
                         const std::vector<double>& w, int64_t n, int64_t c) {
  const std::vector<double> zeros(c, 0.0);
  const Forward f = reference_forward(x, w, zeros, n, c);
  Grads g{std::vector<double>(n * c), std::vector<double>(c, 0.0), std::vector<double>(c, 0.0)};
  for (int64_t i = 0; i < n; ++i) {
    double mean_dxhat = 0.0, mean_dxhat_xhat = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      const double xhat = (x[i * c + j] - f.mean[i]) * f.rstd[i], dy = dout[i * c + j];
      mean_dxhat += dy * w[j] / c;
      mean_dxhat_xhat += dy * w[j] * xhat / c;
      g.dweight[j] += dy * xhat;
      g.dbias[j] += dy;
    }
    for (int64_t j = 0; j < c; ++j) {
      const double xhat = (x[i * c + j] - f.mean[i]) * f.rstd[i];
      g.dinp[i * c + j] =
          f.rstd[i] * (dout[i * c + j] * w[j] - mean_dxhat - xhat * mean_dxhat_xhat);
    }
  }
  return g;
}

struct LayerNormRun {
  Tensor inp, weight, bias, out, mean, rstd, dout, dinp, dweight, dbias, dweight0, dbias0;
};

// Inputs with a non-zero mean; dinp poisoned, dweight/dbias pre-filled with random values.
LayerNormRun run_kernel(const Case& k, std::mt19937_64& rng) {
  const auto make = [](const Shape& s) { return Tensor::empty(s, DType::f32); };
  const Shape x{k.b, k.t, k.c}, per_channel{k.c}, per_row{k.n()};
  LayerNormRun r{make(x),           make(per_channel), make(per_channel), make(x),
                 make(per_row),     make(per_row),     make(x),           make(x),
                 make(per_channel), make(per_channel), make(per_channel), make(per_channel)};
  testing::fill_uniform(r.inp, rng, -1.0f, 3.0f);
  testing::fill_uniform(r.weight, rng, 0.5f, 1.5f);
  testing::fill_normal(r.bias, rng, 0.5f);
  testing::fill_normal(r.dout, rng);
  testing::fill_normal(r.dweight0, rng);
  testing::fill_normal(r.dbias0, rng);
  r.dweight.copy_from(r.dweight0);
  r.dbias.copy_from(r.dbias0);
  for (Tensor* t : {&r.out, &r.mean, &r.rstd, &r.dinp}) testing::poison(*t);
  layernorm_forward(r.out, r.mean, r.rstd, r.inp, r.weight, r.bias);
  layernorm_backward(r.dinp, r.dweight, r.dbias, r.dout, r.inp, r.weight, r.mean, r.rstd);
  return r;
}

class LayerNormVsReference : public ::testing::TestWithParam<Case> {};

// out, mean, rstd and dinp match float64; dinp is overwritten, dweight and dbias accumulate.
TEST_P(LayerNormVsReference, ForwardAndBackward) {
  const Case k = GetParam();
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const LayerNormRun r = run_kernel(k, rng);
  const auto x = testing::to_f64(r.inp), w = testing::to_f64(r.weight);
  const Forward f = reference_forward(x, w, testing::to_f64(r.bias), k.n(), k.c);
  EXPECT_LT(testing::rel_error(r.out, f.out), 1e-5);
  EXPECT_LT(testing::rel_error(r.mean, f.mean), 1e-5);
  EXPECT_LT(testing::rel_error(r.rstd, f.rstd), 1e-5);
  const Grads g = reference_backward(testing::to_f64(r.dout), x, w, k.n(), k.c);
  EXPECT_LT(testing::rel_error(r.dinp, g.dinp), 1e-5);
  EXPECT_LT(testing::rel_error(r.dweight, plus(testing::to_f64(r.dweight0), g.dweight)), 1e-5);
  EXPECT_LT(testing::rel_error(r.dbias, plus(testing::to_f64(r.dbias0), g.dbias)), 1e-5);
}

// (Tiny C is left out: there dinp is mostly cancellation, ill-conditioned in any f32 code.)
INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormVsReference,
                         ::testing::Values(Case{1, 1, 64}, Case{2, 3, 7}, Case{3, 67, 48},
                                           Case{1, 20, 768}));

// The reference gradient is right: finite differences of Σ dout·out(x, w, b) in float64.
TEST(LayerNorm, ReferenceGradientMatchesFiniteDifferences) {
  const int64_t n = 3, c = 5;
  std::mt19937_64 rng(testing::test_seed());
  std::normal_distribution<double> n01;
  std::vector<double> params(n * c + 2 * c), dout(n * c);
  for (double& v : params) v = n01(rng) + 0.3;
  for (double& v : dout) v = n01(rng);
  const auto split = [&](const std::vector<double>& p, int64_t from, int64_t count) {
    return std::vector<double>(p.begin() + from, p.begin() + from + count);
  };
  auto objective = [&](const std::vector<double>& p) {
    const Forward f =
        reference_forward(split(p, 0, n * c), split(p, n * c, c), split(p, n * c + c, c), n, c);
    double s = 0.0;
    for (size_t i = 0; i < f.out.size(); ++i) s += f.out[i] * dout[i];
    return s;
  };
  const Grads g = reference_backward(dout, split(params, 0, n * c), split(params, n * c, c), n, c);
  std::vector<double> analytic = g.dinp;
  analytic.insert(analytic.end(), g.dweight.begin(), g.dweight.end());
  analytic.insert(analytic.end(), g.dbias.begin(), g.dbias.end());
  EXPECT_LT(testing::rel_error(testing::finite_diff(objective, params), analytic), 1e-7);
}

// Bit-identical results for 1, 2 and 3 threads (301 rows: uneven reduction chunks).
TEST(LayerNorm, DeterministicAcrossThreadCounts) {
  const Case k{7, 43, 40};
  const uint64_t seed = testing::test_seed();
  std::vector<LayerNormRun> runs;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::mt19937_64 rng(seed);
    runs.push_back(run_kernel(k, rng));
  }
  omp_set_num_threads(saved);
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_TRUE(bit_equal(runs[0].out, runs[i].out));
    EXPECT_TRUE(bit_equal(runs[0].dinp, runs[i].dinp));
    EXPECT_TRUE(bit_equal(runs[0].dweight, runs[i].dweight));
    EXPECT_TRUE(bit_equal(runs[0].dbias, runs[i].dbias));
  }
}

// An f32 tensor of N(0, sd) values.
Tensor normal(std::mt19937_64& rng, const Shape& shape, float sd) {
  return testing::randn(shape, rng, sd);
}

// The fused residual + layernorm is the two ops one after the other, bit for bit, also when its
// output overwrites its second input.
TEST(LayerNorm, FusedResidualIsBitForBitTheTwoOps) {
  std::mt19937_64 rng(testing::test_seed());
  const int64_t n = 37, c = 96;
  const Tensor a = normal(rng, {n, c}, 2.0f), b = normal(rng, {n, c}, 1.0f),
               w = normal(rng, {c}, 1.0f), bias = normal(rng, {c}, 0.5f);
  auto flat = [](const Tensor& t) {
    return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  };
  Tensor res = Tensor::empty({n, c}, DType::f32), y = Tensor::empty({n, c}, DType::f32);
  Tensor mean = Tensor::empty({n}, DType::f32), rstd = Tensor::empty({n}, DType::f32);
  residual_forward(res, a, b);
  layernorm_forward(y, mean, rstd, res, w, bias);

  Tensor fres = Tensor::empty({n, c}, DType::f32), fy = b.to(Device::cpu());  // out aliases b
  Tensor fmean = Tensor::empty({n}, DType::f32), frstd = Tensor::empty({n}, DType::f32);
  residual_layernorm_forward(fres, fy, fmean, frstd, a, fy, w, bias);
  EXPECT_EQ(flat(fres), flat(res));
  EXPECT_EQ(flat(fy), flat(y));
  EXPECT_EQ(flat(fmean), flat(mean));
  EXPECT_EQ(flat(frstd), flat(rstd));
  Tensor short_b = Tensor::empty({n - 1, c}, DType::f32);
  EXPECT_THROW(residual_layernorm_forward(fres, fy, fmean, frstd, a, short_b, w, bias), Error);
}

// The residual's gradient joined in the backward pass is the separate add, bit for bit, also in
// place (dinp the same tensor as dresidual); dweight and dbias are those without it.
TEST(LayerNorm, BackwardWithTheResidualGradientIsBitForBitTheAdd) {
  std::mt19937_64 rng(testing::test_seed());
  const int64_t n = 29, c = 80;
  const Tensor x = normal(rng, {n, c}, 2.0f), w = normal(rng, {c}, 1.0f),
               bias = normal(rng, {c}, 0.5f), dy = normal(rng, {n, c}, 1.0f),
               dres = normal(rng, {n, c}, 1.0f);
  auto flat = [](const Tensor& t) {
    return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  };
  Tensor y = Tensor::empty({n, c}, DType::f32), mean = Tensor::empty({n}, DType::f32),
         rstd = Tensor::empty({n}, DType::f32);
  layernorm_forward(y, mean, rstd, x, w, bias);
  Tensor dx = Tensor::empty({n, c}, DType::f32), sum = Tensor::empty({n, c}, DType::f32);
  Tensor dw = Tensor::zeros({c}, DType::f32), db = Tensor::zeros({c}, DType::f32);
  layernorm_backward(dx, dw, db, dy, x, w, mean, rstd);
  residual_forward(sum, dres, dx);

  Tensor fused = Tensor::empty({n, c}, DType::f32), inplace = dres.to(Device::cpu());
  Tensor fdw = Tensor::zeros({c}, DType::f32), fdb = Tensor::zeros({c}, DType::f32);
  layernorm_backward(fused, fdw, fdb, dy, x, w, mean, rstd, dres);
  EXPECT_EQ(flat(fused), flat(sum));
  EXPECT_EQ(flat(fdw), flat(dw));
  EXPECT_EQ(flat(fdb), flat(db));
  layernorm_backward(inplace, fdw, fdb, dy, x, w, mean, rstd, inplace);
  EXPECT_EQ(flat(inplace), flat(sum));
  // With a 16-bit copy: dinp unchanged, the copy dinp rounded.
  for (const DType half : {DType::bf16, DType::f16}) {
    Tensor copied = Tensor::empty({n, c}, DType::f32), rounded = Tensor::empty({n, c}, half);
    Tensor want = Tensor::empty({n, c}, half);
    layernorm_backward(copied, fdw, fdb, dy, x, w, mean, rstd, dres, &rounded);
    EXPECT_EQ(flat(copied), flat(sum));
    convert(want, sum);
    EXPECT_EQ(0, std::memcmp(rounded.raw(), want.raw(), want.nbytes())) << dtype_name(half);
  }
  Tensor f32_copy = Tensor::empty({n, c}, DType::f32);
  EXPECT_THROW(layernorm_backward(fused, fdw, fdb, dy, x, w, mean, rstd, dres, &f32_copy), Error);
  EXPECT_THROW(layernorm_backward(fused, fdw, fdb, dy, x, w, mean, rstd,
                                  Tensor::empty({n, c + 1}, DType::f32)),
               Error);
}

// A 16-bit out (an activation only 16-bit GEMMs read) holds the f32 out rounded to nearest even,
// for both forward ops; mean, rstd and res stay f32 and unchanged.
TEST(LayerNorm, SixteenBitOutIsTheRoundedF32Out) {
  std::mt19937_64 rng(testing::test_seed());
  const int64_t n = 37, c = 96;
  const Tensor a = normal(rng, {n, c}, 2.0f), b = normal(rng, {n, c}, 1.0f),
               w = normal(rng, {c}, 1.0f), bias = normal(rng, {c}, 0.5f);
  Tensor res = Tensor::empty({n, c}, DType::f32), y = Tensor::empty({n, c}, DType::f32);
  Tensor mean = Tensor::empty({n}, DType::f32), rstd = Tensor::empty({n}, DType::f32);
  residual_layernorm_forward(res, y, mean, rstd, a, b, w, bias);
  for (const DType half : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(half));
    Tensor want = Tensor::empty({n, c}, half);
    convert(want, y);
    Tensor y16 = Tensor::empty({n, c}, half), fres = Tensor::empty({n, c}, DType::f32);
    Tensor m = Tensor::empty({n}, DType::f32), r = Tensor::empty({n}, DType::f32);
    residual_layernorm_forward(fres, y16, m, r, a, b, w, bias);
    EXPECT_EQ(std::memcmp(y16.raw(), want.raw(), want.nbytes()), 0);
    EXPECT_EQ(std::memcmp(fres.raw(), res.raw(), res.nbytes()), 0);
    EXPECT_EQ(std::memcmp(r.raw(), rstd.raw(), rstd.nbytes()), 0);
    Tensor plain = Tensor::empty({n, c}, half);
    layernorm_forward(plain, m, r, res, w, bias);
    EXPECT_EQ(std::memcmp(plain.raw(), want.raw(), want.nbytes()), 0);
  }
  Tensor i32_out = Tensor::empty({n, c}, DType::i32);
  EXPECT_THROW(layernorm_forward(i32_out, mean, rstd, a, w, bias), Error);
}

TEST(LayerNorm, RejectsBadInputs) {
  const auto f32 = [](const Shape& s) { return Tensor::zeros(s, DType::f32); };
  Tensor inp = f32({4, 6}), w = f32({6}), b = f32({6}), out = f32({4, 6}), mean = f32({4}),
         rstd = f32({4});
  Tensor dinp = f32({4, 6}), dout = f32({4, 6}), dw = f32({6}), db = f32({6}), undefined;
  EXPECT_NO_THROW(layernorm_forward(out, mean, rstd, inp, w, b));
  EXPECT_THROW(layernorm_forward(out, mean, rstd, Tensor::zeros({4, 6}, DType::bf16), w, b), Error);
  EXPECT_THROW(layernorm_forward(out, mean, rstd, f32({4, 5}), w, b), Error);  // C mismatch
  EXPECT_THROW(layernorm_forward(out, mean, rstd, inp, w, f32({5})), Error);
  Tensor short_mean = f32({3}), wide_out = f32({4, 7});
  EXPECT_THROW(layernorm_forward(out, short_mean, rstd, inp, w, b), Error);
  EXPECT_THROW(layernorm_forward(wide_out, mean, rstd, inp, w, b), Error);
  EXPECT_THROW(layernorm_backward(undefined, dw, db, dout, inp, w, mean, rstd), Error);
  EXPECT_THROW(layernorm_backward(dinp, dw, db, f32({4, 5}), inp, w, mean, rstd), Error);
  Tensor short_dw = f32({5}), i32_db = Tensor::zeros({6}, DType::i32);
  EXPECT_THROW(layernorm_backward(dinp, short_dw, db, dout, inp, w, mean, rstd), Error);
  EXPECT_THROW(layernorm_backward(dinp, dw, i32_db, dout, inp, w, mean, rstd), Error);
  EXPECT_THROW(layernorm_backward(dinp, dw, db, dout, inp, w, mean, f32({5})), Error);
}

}  // namespace
}  // namespace tessera
