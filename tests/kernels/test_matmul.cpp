// Linear layer against a float64 reference whose gradient is itself checked by finite differences;
// the accumulate/overwrite contracts, the optional bias and dinp, determinism, and errors.
#include "kernels/matmul.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "kernels/convert.h"
#include "kernels/gelu.h"
#include "kernels/residual.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

struct Case {
  int64_t b, t, ic, oc;  // inp (B, T, IC), weight (IC, OC); N = B·T
  int64_t n() const { return b * t; }
};

void PrintTo(const Case& k, std::ostream* os) {
  *os << "B=" << k.b << " T=" << k.t << " IC=" << k.ic << " OC=" << k.oc;
}

using testing::randn;

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::vector<double> plus(std::vector<double> a, const std::vector<double>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// out (N, OC) = x (N, IC) · w (IC, OC) + bias (OC); an empty bias means none.
std::vector<double> reference_forward(const std::vector<double>& x, const std::vector<double>& w,
                                      const std::vector<double>& bias, const Case& k) {
  std::vector<double> out(k.n() * k.oc);
  for (int64_t i = 0; i < k.n(); ++i)
    for (int64_t o = 0; o < k.oc; ++o) {
      double s = bias.empty() ? 0.0 : bias[o];
      for (int64_t c = 0; c < k.ic; ++c) s += x[i * k.ic + c] * w[c * k.oc + o];
      out[i * k.oc + o] = s;
    }
  return out;
}

struct Grads {
  std::vector<double> dinp, dweight, dbias;
};

// dinp = dout · wᵀ, dweight = xᵀ · dout, dbias = Σ_n dout.
Grads reference_backward(const std::vector<double>& dout, const std::vector<double>& x,
                         const std::vector<double>& w, const Case& k) {
  Grads g{std::vector<double>(k.n() * k.ic, 0.0), std::vector<double>(k.ic * k.oc, 0.0),
          std::vector<double>(k.oc, 0.0)};
  for (int64_t i = 0; i < k.n(); ++i)
    for (int64_t o = 0; o < k.oc; ++o) {
      const double dy = dout[i * k.oc + o];
      g.dbias[o] += dy;
      for (int64_t c = 0; c < k.ic; ++c) {
        g.dinp[i * k.ic + c] += dy * w[c * k.oc + o];
        g.dweight[c * k.oc + o] += x[i * k.ic + c] * dy;
      }
    }
  return g;
}

std::vector<double> abs_of(std::vector<double> a) {
  for (double& e : a) e = std::abs(e);
  return a;
}

// ||got − want|| over ||size||, size being the same sums taken over the terms' absolute values
// (and what they are added to): the bound floating-point summation error has. A sum that cancels
// to near zero (a 1 × 1 product plus its bias) is measured against what was summed, not against
// its own tiny value, so a correct kernel cannot fail by chance; a wrong term still shows at
// full size. NaN anywhere gives +inf.
double error_vs_terms(const Tensor& got, const std::vector<double>& want,
                      const std::vector<double>& size) {
  const std::vector<double> g = testing::to_f64(got);
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(g[i])) return INFINITY;
    diff += (g[i] - want[i]) * (g[i] - want[i]);
    scale += size[i] * size[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(scale), 1e-300);
}

struct MatmulRun {
  Tensor inp, weight, bias, out, dout, dinp, dweight, dbias, dweight0, dbias0;
};

// Forward with bias, then backward into a poisoned dinp and pre-filled dweight/dbias.
MatmulRun run_kernel(const Case& k, std::mt19937_64& rng) {
  MatmulRun r;
  r.inp = randn({k.b, k.t, k.ic}, rng);
  r.weight = randn({k.ic, k.oc}, rng);
  r.bias = randn({k.oc}, rng);
  r.dout = randn({k.b, k.t, k.oc}, rng);
  r.dweight0 = randn({k.ic, k.oc}, rng);
  r.dbias0 = randn({k.oc}, rng);
  r.out = Tensor::empty({k.b, k.t, k.oc}, DType::f32);
  r.dinp = Tensor::empty({k.b, k.t, k.ic}, DType::f32);
  r.dweight = Tensor::empty({k.ic, k.oc}, DType::f32);
  r.dbias = Tensor::empty({k.oc}, DType::f32);
  r.dweight.copy_from(r.dweight0);
  r.dbias.copy_from(r.dbias0);
  testing::poison(r.out);
  testing::poison(r.dinp);
  matmul_forward(r.out, r.inp, r.weight, r.bias);
  matmul_backward(r.dinp, r.dweight, r.dbias, r.dout, r.inp, r.weight);
  return r;
}

class MatmulVsReference : public ::testing::TestWithParam<Case> {};

// Forward and backward match float64 to 1e-5 of their terms' size (error_vs_terms); dinp is
// overwritten, dweight and dbias accumulate.
TEST_P(MatmulVsReference, ForwardAndBackward) {
  const Case k = GetParam();
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const MatmulRun r = run_kernel(k, rng);
  const auto x = testing::to_f64(r.inp), w = testing::to_f64(r.weight),
             dout = testing::to_f64(r.dout), bias = testing::to_f64(r.bias),
             dweight0 = testing::to_f64(r.dweight0), dbias0 = testing::to_f64(r.dbias0);
  const Grads g = reference_backward(dout, x, w, k);
  const Grads size = reference_backward(abs_of(dout), abs_of(x), abs_of(w), k);
  EXPECT_LT(error_vs_terms(r.out, reference_forward(x, w, bias, k),
                           reference_forward(abs_of(x), abs_of(w), abs_of(bias), k)),
            1e-5);
  EXPECT_LT(error_vs_terms(r.dinp, g.dinp, size.dinp), 1e-5);
  EXPECT_LT(
      error_vs_terms(r.dweight, plus(dweight0, g.dweight), plus(abs_of(dweight0), size.dweight)),
      1e-5);
  EXPECT_LT(error_vs_terms(r.dbias, plus(dbias0, g.dbias), plus(abs_of(dbias0), size.dbias)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulVsReference,
                         ::testing::Values(Case{1, 1, 1, 1}, Case{2, 3, 5, 7}, Case{3, 67, 33, 17},
                                           Case{1, 130, 64, 96}));

// The reference gradient is right: finite differences of Σ dout·out(x, w, b) in float64.
TEST(Matmul, ReferenceGradientMatchesFiniteDifferences) {
  const Case k{1, 4, 3, 5};
  std::mt19937_64 rng(testing::test_seed());
  std::normal_distribution<double> n01;
  std::vector<double> x(k.n() * k.ic), w(k.ic * k.oc), b(k.oc), dout(k.n() * k.oc);
  for (auto* v : {&x, &w, &b, &dout})
    for (double& e : *v) e = n01(rng);
  const size_t nx = x.size(), nw = w.size();
  auto objective = [&](const std::vector<double>& p) {
    const std::vector<double> px(p.begin(), p.begin() + nx),
        pw(p.begin() + nx, p.begin() + nx + nw), pb(p.begin() + nx + nw, p.end());
    const std::vector<double> out = reference_forward(px, pw, pb, k);
    double s = 0.0;
    for (size_t i = 0; i < out.size(); ++i) s += out[i] * dout[i];
    return s;
  };
  std::vector<double> params = x;
  params.insert(params.end(), w.begin(), w.end());
  params.insert(params.end(), b.begin(), b.end());
  const Grads g = reference_backward(dout, x, w, k);
  std::vector<double> analytic = g.dinp;
  analytic.insert(analytic.end(), g.dweight.begin(), g.dweight.end());
  analytic.insert(analytic.end(), g.dbias.begin(), g.dbias.end());
  EXPECT_LT(testing::rel_error(testing::finite_diff(objective, params), analytic), 1e-7);
}

// bias undefined: out = x·w even over a poisoned out; dinp and dbias undefined are skipped.
TEST(Matmul, NoBiasNoDinp) {
  const Case k{2, 5, 6, 4};
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Tensor inp = randn({k.b, k.t, k.ic}, rng), weight = randn({k.ic, k.oc}, rng),
               dout = randn({k.b, k.t, k.oc}, rng);
  Tensor out = Tensor::empty({k.b, k.t, k.oc}, DType::f32);
  testing::poison(out);
  matmul_forward(out, inp, weight, Tensor());
  const auto x = testing::to_f64(inp), w = testing::to_f64(weight);
  EXPECT_LT(testing::rel_error(out, reference_forward(x, w, {}, k)), 1e-5);
  Tensor dinp, dbias, dweight = Tensor::zeros({k.ic, k.oc}, DType::f32);
  matmul_backward(dinp, dweight, dbias, dout, inp, weight);
  EXPECT_LT(testing::rel_error(dweight, reference_backward(testing::to_f64(dout), x, w, k).dweight),
            1e-5);
}

// With a residual, out is residual_forward(residual, the plain product) bit for bit; out may not
// be the residual itself.
TEST(Matmul, ResidualIsBitForBitTheSeparateAdd) {
  const Case k{2, 9, 24, 40};
  std::mt19937_64 rng(testing::test_seed());
  const Tensor inp = randn({k.b, k.t, k.ic}, rng), weight = randn({k.ic, k.oc}, rng),
               bias = randn({k.oc}, rng), res = randn({k.b, k.t, k.oc}, rng);
  Tensor plain = Tensor::empty({k.b, k.t, k.oc}, DType::f32),
         sum = Tensor::empty({k.b, k.t, k.oc}, DType::f32);
  matmul_forward(plain, inp, weight, bias);
  residual_forward(sum, res, plain);
  Tensor fused = Tensor::empty({k.b, k.t, k.oc}, DType::f32);
  testing::poison(fused);
  matmul_forward(fused, inp, weight, bias, DType::f32, res);
  auto flat = [](const Tensor& t) {
    return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  };
  EXPECT_EQ(flat(fused), flat(sum));
  Tensor alias = Tensor::empty(res.shape(), DType::f32);
  alias.copy_from(res);
  EXPECT_THROW(matmul_forward(alias, inp, weight, bias, DType::f32, alias), Error);
  EXPECT_THROW(matmul_forward(fused, inp, weight, bias, DType::f32, randn({3, k.oc}, rng)), Error);
}

// The GELU fusions are, on the CPU, bit for bit the separate ops: in f32 matmul_forward then
// gelu_forward, and matmul_backward then gelu_backward; with 16-bit outputs the same computed in
// f32 from a bias rounded to the output type, then rounded once (pre, out and dinp).
TEST(Matmul, GeluFusionIsBitForBitTheSeparateOps) {
  const Case k{2, 9, 24, 40};
  std::mt19937_64 rng(testing::test_seed());
  const Tensor x = randn({k.b, k.t, k.ic}, rng), w = randn({k.ic, k.oc}, rng),
               bias = randn({k.oc}, rng), w2 = randn({k.oc, k.ic}, rng),
               dy = randn({k.b, k.t, k.ic}, rng);
  auto bytes = [](const Tensor& t) {
    const auto* p = static_cast<const unsigned char*>(t.raw());
    return std::vector<unsigned char>(p, p + t.nbytes());
  };
  for (const DType type : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(type));
    // What the fused ops must give: pre in f32 (from the bias as the output type rounds it).
    Tensor b_rounded = Tensor::empty(bias.shape(), DType::f32);
    b_rounded.copy_from(rounded_f32(bias, type));
    Tensor pre32 = Tensor::empty({k.b, k.t, k.oc}, DType::f32);
    matmul_forward(pre32, x, w, b_rounded, type);
    Tensor want_pre = Tensor::empty(pre32.shape(), type),
           want_out = Tensor::empty(pre32.shape(), type);
    if (type == DType::f32)
      want_pre.copy_from(pre32);
    else
      convert(want_pre, pre32);
    gelu_forward(want_out, pre32);
    Tensor pre = Tensor::empty(pre32.shape(), type), out = Tensor::empty(pre32.shape(), type);
    matmul_gelu_forward(out, pre, x, w, bias, type);
    EXPECT_EQ(bytes(pre), bytes(want_pre));
    EXPECT_EQ(bytes(out), bytes(want_out));
    // matmul_forward with a 16-bit out: the same pre, rounded.
    Tensor plain = Tensor::empty(pre32.shape(), type);
    matmul_forward(plain, x, w, bias, type);
    EXPECT_EQ(bytes(plain), bytes(want_pre));

    // Backward through the next layer (out -> w2) and the GELU.
    Tensor product = Tensor::empty(pre32.shape(), DType::f32),
           want_dpre = Tensor::empty(pre32.shape(), type);
    Tensor dw_a = Tensor::zeros(w2.shape(), DType::f32),
           dw_b = Tensor::zeros(w2.shape(), DType::f32);
    Tensor none;
    matmul_backward(product, dw_a, none, dy, out, w2, type);
    gelu_backward(want_dpre, product, pre);
    Tensor dpre = Tensor::empty(pre32.shape(), type);
    matmul_backward(dpre, dw_b, none, dy, out, w2, type, pre);
    EXPECT_EQ(bytes(dpre), bytes(want_dpre));
    EXPECT_EQ(bytes(dw_b), bytes(dw_a));
    if (type != DType::f32) {  // a 16-bit dinp without GELU: the f32 product rounded once
      Tensor dout16 = Tensor::empty(pre32.shape(), type),
             want16 = Tensor::empty(pre32.shape(), type);
      matmul_backward(dout16, dw_b, none, dy, out, w2, type);
      convert(want16, product);
      EXPECT_EQ(bytes(dout16), bytes(want16));
    }
  }
  Tensor pre_f32 = Tensor::empty({k.b, k.t, k.oc}, DType::f32),
         out_bf16 = Tensor::empty({k.b, k.t, k.oc}, DType::bf16);
  EXPECT_THROW(matmul_gelu_forward(out_bf16, pre_f32, x, w, bias, DType::bf16), Error);
  Tensor f32_out = Tensor::empty({k.b, k.t, k.oc}, DType::f32);
  EXPECT_THROW(matmul_forward(out_bf16, x, w, bias, DType::f16), Error);  // not the compute type
  EXPECT_THROW(matmul_forward(out_bf16, x, w, bias, DType::bf16, f32_out), Error);  // residual
  Tensor dx_f32 = Tensor::empty({k.b, k.t, k.ic}, DType::f32),
         pre_bf16 = Tensor::empty({k.b, k.t, k.ic}, DType::bf16),
         dw = Tensor::zeros(w.shape(), DType::f32), none;
  EXPECT_THROW(  // gelu_pre f32 or dinp's type
      matmul_backward(dx_f32, dw, none, randn({k.b, k.t, k.oc}, rng), x, w, DType::bf16, pre_bf16),
      Error);
}

// Bit-identical results for 1, 2 and 3 threads (dbias is a chunked reduction over 301 rows).
TEST(Matmul, DeterministicAcrossThreadCounts) {
  const Case k{7, 43, 40, 72};
  const uint64_t seed = testing::test_seed();
  std::vector<MatmulRun> runs;
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

// 16-bit compute on the CPU (the CUDA path's reference): the product of the operands rounded to
// bf16 / f16 (fp32 accumulation of exact products), from an f32 input or from one already stored
// in the 16-bit type (and dout likewise); the bias gradient sums dout as given, like the CUDA
// column sums.
TEST(Matmul, SixteenBitComputeIsTheProductOfRoundedOperands) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Case k{3, 7, 48, 40};
  const Tensor x = randn({k.b, k.t, k.ic}, rng), w = randn({k.ic, k.oc}, rng),
               bias = randn({k.oc}, rng), dy = randn({k.b, k.t, k.oc}, rng);
  for (const DType half : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(half));
    const auto rx = testing::to_f64(rounded_f32(x, half)),
               rw = testing::to_f64(rounded_f32(w, half));
    const auto rdy = testing::to_f64(rounded_f32(dy, half));
    const std::vector<double> want = reference_forward(rx, rw, testing::to_f64(bias), k);
    Grads g = reference_backward(rdy, rx, rw, k);
    g.dbias = reference_backward(testing::to_f64(dy), rx, rw, k).dbias;
    Tensor x16 = Tensor::empty(x.shape(), half), dy16 = Tensor::empty(dy.shape(), half);
    convert(x16, x);
    convert(dy16, dy);
    for (const bool stored : {false, true}) {  // inp and dout f32, or stored in the 16-bit type
      SCOPED_TRACE(stored ? "16-bit inp and dout" : "f32 inp and dout");
      const Tensor& inp = stored ? x16 : x;
      const Tensor& dout = stored ? dy16 : dy;
      Tensor out = Tensor::empty({k.b, k.t, k.oc}, DType::f32);
      Tensor dinp = Tensor::empty(x.shape(), DType::f32), dw = Tensor::zeros(w.shape(), DType::f32),
             db = Tensor::zeros(bias.shape(), DType::f32);
      matmul_forward(out, inp, w, bias, half);
      matmul_backward(dinp, dw, db, dout, inp, w, half);
      EXPECT_LT(testing::rel_error(out, want), 1e-6);
      EXPECT_LT(testing::rel_error(dinp, g.dinp), 1e-6);
      EXPECT_LT(testing::rel_error(dw, g.dweight), 1e-6);
      // The bias gradient sums dout as it is given: rounded only when stored so.
      EXPECT_LT(testing::rel_error(db, stored ? reference_backward(rdy, rx, rw, k).dbias : g.dbias),
                1e-6);
      EXPECT_GT(testing::rel_error(out, reference_forward(testing::to_f64(x), testing::to_f64(w),
                                                          testing::to_f64(bias), k)),
                1e-5);  // the rounding ran
    }
  }
}

// Wrong dtypes and shapes throw Error instead of reading out of bounds.
TEST(Matmul, RejectsBadInputs) {
  const auto f32 = [](const Shape& s) { return Tensor::zeros(s, DType::f32); };
  Tensor inp = f32({4, 3}), weight = f32({3, 5}), bias = f32({5}), out = f32({4, 5});
  Tensor dout = f32({4, 5}), dinp = f32({4, 3}), dweight = f32({3, 5}), dbias = f32({5});
  Tensor i32_inp = Tensor::zeros({4, 3}, DType::i32), bf16_w = Tensor::zeros({3, 5}, DType::bf16);
  EXPECT_THROW(matmul_forward(out, i32_inp, weight, bias), Error);
  EXPECT_THROW(matmul_forward(out, inp, bf16_w, bias), Error);
  EXPECT_THROW(matmul_forward(out, f32({4, 4}), weight, bias), Error);  // IC mismatch
  EXPECT_THROW(matmul_forward(out, inp, f32({15}), bias), Error);       // weight not 2-D
  const Tensor bf16_inp = Tensor::zeros({4, 3}, DType::bf16);
  EXPECT_THROW(matmul_forward(out, bf16_inp, weight, bias), Error);  // bf16 inp, f32 GEMM
  EXPECT_THROW(matmul_forward(out, bf16_inp, weight, bias, DType::f16), Error);
  EXPECT_THROW(matmul_backward(dinp, dweight, dbias, dout, bf16_inp, weight, DType::f16), Error);
  EXPECT_THROW(matmul_forward(out, inp, weight, bias, DType::i32), Error);
  Tensor small_out = f32({4, 4}), long_bias = f32({6}), undefined;
  EXPECT_THROW(matmul_forward(small_out, inp, weight, bias), Error);
  EXPECT_THROW(matmul_forward(out, inp, weight, long_bias), Error);
  EXPECT_THROW(matmul_forward(out, undefined, weight, bias), Error);
  EXPECT_THROW(matmul_backward(dinp, dweight, dbias, f32({4, 4}), inp, weight), Error);
  EXPECT_THROW(matmul_backward(dinp, dweight, dbias, dout, f32({5, 3}), weight), Error);
  Tensor short_dinp = f32({3, 3}), t_dweight = f32({5, 3}), long_dbias = f32({6});
  EXPECT_THROW(matmul_backward(short_dinp, dweight, dbias, dout, inp, weight), Error);
  EXPECT_THROW(matmul_backward(dinp, t_dweight, dbias, dout, inp, weight), Error);
  EXPECT_THROW(matmul_backward(dinp, dweight, long_dbias, dout, inp, weight), Error);
  EXPECT_THROW(matmul_backward(dinp, undefined, dbias, dout, inp, weight), Error);
}

}  // namespace
}  // namespace tessera
