// Fused LM head + softmax cross-entropy against a float64 log-softmax reference (whose gradient is
// checked by finite differences), across row chunks; contracts, determinism and errors.
#include "kernels/classifier.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

struct Case {
  int64_t n, c, v;  // x (N, C), wte (V, C), targets (N)
};

void PrintTo(const Case& k, std::ostream* os) {
  *os << "N=" << k.n << " C=" << k.c << " V=" << k.v;
}

// The kernel's rows per chunk (classifier.cpp): max(32, 2^20 / V).
int64_t chunk_rows(int64_t v) {
  return std::max<int64_t>(32, (int64_t{1} << 20) / v);
}

using testing::randn;

Tensor random_targets(int64_t n, int64_t v, std::mt19937_64& rng) {
  Tensor t = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = static_cast<int32_t>(rng() % v);
  return t;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// after − before in float64: what a kernel added to an accumulated gradient.
std::vector<double> increment(const Tensor& after, const Tensor& before) {
  std::vector<double> d = testing::to_f64(after);
  const float* b = before.data<float>();
  for (size_t i = 0; i < d.size(); ++i) d[i] -= b[i];
  return d;
}

std::vector<double> reference_logits(const std::vector<double>& x, const std::vector<double>& wte,
                                     const Case& k) {
  std::vector<double> logits(k.n * k.v, 0.0);
  for (int64_t i = 0; i < k.n; ++i)
    for (int64_t j = 0; j < k.v; ++j)
      for (int64_t e = 0; e < k.c; ++e) logits[i * k.v + j] += x[i * k.c + e] * wte[j * k.c + e];
  return logits;
}

struct Reference {
  std::vector<double> losses, dx, dwte;
};

// losses = −log_softmax(logits)[target]; dlogits = (softmax − onehot)·dloss; dx = dlogits·wte;
// dwte = dlogitsᵀ·x.
Reference reference(const std::vector<double>& x, const std::vector<double>& wte,
                    const int32_t* targets, double dloss, const Case& k) {
  const std::vector<double> logits = reference_logits(x, wte, k);
  Reference r{std::vector<double>(k.n), std::vector<double>(k.n * k.c, 0.0),
              std::vector<double>(k.v * k.c, 0.0)};
  for (int64_t i = 0; i < k.n; ++i) {
    const double* l = &logits[i * k.v];
    double mx = l[0], sum = 0.0;
    for (int64_t j = 1; j < k.v; ++j) mx = std::max(mx, l[j]);
    for (int64_t j = 0; j < k.v; ++j) sum += std::exp(l[j] - mx);
    const double lse = mx + std::log(sum);
    r.losses[i] = lse - l[targets[i]];
    for (int64_t j = 0; j < k.v; ++j) {
      const double dl = (std::exp(l[j] - lse) - (j == targets[i] ? 1.0 : 0.0)) * dloss;
      for (int64_t e = 0; e < k.c; ++e) {
        r.dx[i * k.c + e] += dl * wte[j * k.c + e];
        r.dwte[j * k.c + e] += dl * x[i * k.c + e];
      }
    }
  }
  return r;
}

struct ClassifierRun {
  Tensor x, wte, targets, losses, losses_fwd, dx, dwte, dwte0;
};

// classifier_forward, then forward_backward into a poisoned dx and a pre-filled dwte.
ClassifierRun run_kernel(const Case& k, float dloss, std::mt19937_64& rng) {
  ClassifierRun r{randn({k.n, k.c}, rng),
                  randn({k.v, k.c}, rng, 0.5f),
                  random_targets(k.n, k.v, rng),
                  Tensor::empty({k.n}, DType::f32),
                  Tensor::empty({k.n}, DType::f32),
                  Tensor::empty({k.n, k.c}, DType::f32),
                  Tensor::empty({k.v, k.c}, DType::f32),
                  randn({k.v, k.c}, rng, 1.0f / k.n)};
  r.dwte.copy_from(r.dwte0);
  for (Tensor* t : {&r.losses, &r.losses_fwd, &r.dx}) testing::poison(*t);
  classifier_forward(r.losses_fwd, r.x, r.wte, r.targets);
  classifier_forward_backward(r.losses, r.dx, r.dwte, r.x, r.wte, r.targets, dloss);
  return r;
}

class ClassifierVsReference : public ::testing::TestWithParam<Case> {};

// losses, dx (overwritten) and dwte (accumulated) match float64; both entry points give the
// same losses bit for bit.
TEST_P(ClassifierVsReference, ForwardAndBackward) {
  const Case k = GetParam();
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const float dloss = 1.0f / k.n;  // a mean over N tokens
  const ClassifierRun r = run_kernel(k, dloss, rng);
  const Reference ref =
      reference(testing::to_f64(r.x), testing::to_f64(r.wte), r.targets.data<int32_t>(), dloss, k);
  EXPECT_LT(testing::rel_error(r.losses, ref.losses), 1e-6);
  EXPECT_TRUE(bit_equal(r.losses, r.losses_fwd));
  EXPECT_LT(testing::rel_error(r.dx, ref.dx), 1e-5);
  EXPECT_LT(testing::rel_error(increment(r.dwte, r.dwte0), ref.dwte), 1e-5);
}

// One partial chunk; three chunks of V = 97 (N = 2·10810 + 5); three chunks of 32 rows at V =
// 40000.
INSTANTIATE_TEST_SUITE_P(Shapes, ClassifierVsReference,
                         ::testing::Values(Case{37, 24, 97}, Case{2 * chunk_rows(97) + 5, 8, 97},
                                           Case{2 * chunk_rows(40000) + 7, 8, 40000}));

// logits_forward matches x·wteᵀ in float64 over a poisoned output; leading dims are flattened.
TEST(Classifier, LogitsForward) {
  const Case k{2 * 19, 24, 97};
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Tensor x = randn({2, 19, k.c}, rng), wte = randn({k.v, k.c}, rng);
  Tensor logits = Tensor::empty({2, 19, k.v}, DType::f32);
  testing::poison(logits);
  logits_forward(logits, x, wte);
  EXPECT_LT(
      testing::rel_error(logits, reference_logits(testing::to_f64(x), testing::to_f64(wte), k)),
      1e-6);
}

// The reference gradient is right: finite differences of dloss·Σ losses(x, wte) in float64.
TEST(Classifier, ReferenceGradientMatchesFiniteDifferences) {
  const Case k{3, 4, 5};
  std::mt19937_64 rng(testing::test_seed());
  std::normal_distribution<double> n01;
  std::vector<double> params((k.n + k.v) * k.c);
  for (double& p : params) p = n01(rng);
  const Tensor targets = random_targets(k.n, k.v, rng);
  const double dloss = 0.7;
  const auto split = [&](const std::vector<double>& p) {
    return std::pair{std::vector<double>(p.begin(), p.begin() + k.n * k.c),
                     std::vector<double>(p.begin() + k.n * k.c, p.end())};
  };
  auto objective = [&](const std::vector<double>& p) {
    const auto [x, wte] = split(p);
    double s = 0.0;
    for (double l : reference(x, wte, targets.data<int32_t>(), dloss, k).losses) s += dloss * l;
    return s;
  };
  const auto [x, wte] = split(params);
  Reference ref = reference(x, wte, targets.data<int32_t>(), dloss, k);
  ref.dx.insert(ref.dx.end(), ref.dwte.begin(), ref.dwte.end());
  EXPECT_LT(testing::rel_error(testing::finite_diff(objective, params), ref.dx), 1e-8);
}

// Bit-identical results for 1, 2 and 3 threads, across three row chunks.
TEST(Classifier, DeterministicAcrossThreadCounts) {
  const Case k{2 * chunk_rows(40000) + 7, 16, 40000};
  const uint64_t seed = testing::test_seed();
  std::vector<ClassifierRun> runs;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    std::mt19937_64 rng(seed);
    runs.push_back(run_kernel(k, 1.0f / k.n, rng));
  }
  omp_set_num_threads(saved);
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_TRUE(bit_equal(runs[0].losses, runs[i].losses));
    EXPECT_TRUE(bit_equal(runs[0].dx, runs[i].dx));
    EXPECT_TRUE(bit_equal(runs[0].dwte, runs[i].dwte));
  }
}

// Out-of-range targets, wrong dtypes and mismatched shapes throw Error.
TEST(Classifier, RejectsBadInputs) {
  const auto f32 = [](const Shape& s) { return Tensor::zeros(s, DType::f32); };
  Tensor x = f32({4, 3}), wte = f32({7, 3}), losses = f32({4}), dx = f32({4, 3}),
         dwte = f32({7, 3});
  Tensor targets = Tensor::zeros({4}, DType::i32);
  EXPECT_NO_THROW(classifier_forward_backward(losses, dx, dwte, x, wte, targets, 0.25f));
  for (int32_t bad : {-1, 7}) {
    targets.data<int32_t>()[2] = bad;
    EXPECT_THROW(classifier_forward(losses, x, wte, targets), Error) << bad;
    EXPECT_THROW(classifier_forward_backward(losses, dx, dwte, x, wte, targets, 0.25f), Error)
        << bad;
  }
  const Tensor ok = Tensor::zeros({4}, DType::i32);
  EXPECT_THROW(classifier_forward(losses, x, wte, Tensor::zeros({4}, DType::f32)), Error);
  EXPECT_THROW(classifier_forward(losses, x, wte, Tensor::zeros({5}, DType::i32)), Error);
  EXPECT_THROW(classifier_forward(losses, f32({4, 2}), wte, ok), Error);  // C mismatch
  EXPECT_THROW(classifier_forward(losses, x, Tensor::zeros({7, 3}, DType::bf16), ok), Error);
  EXPECT_THROW(classifier_forward(losses, x, f32({21}), ok), Error);
  Tensor short_losses = f32({3}), wrong_dx = f32({3, 4}), wrong_dwte = f32({7, 4}), undefined;
  EXPECT_THROW(classifier_forward(short_losses, x, wte, ok), Error);
  EXPECT_THROW(classifier_forward_backward(losses, wrong_dx, dwte, x, wte, ok, 0.25f), Error);
  EXPECT_THROW(classifier_forward_backward(losses, dx, wrong_dwte, x, wte, ok, 0.25f), Error);
  EXPECT_THROW(classifier_forward_backward(losses, undefined, dwte, x, wte, ok, 0.25f), Error);
  Tensor logits = f32({4, 7}), wrong_logits = f32({4, 6});
  EXPECT_NO_THROW(logits_forward(logits, x, wte));
  EXPECT_THROW(logits_forward(wrong_logits, x, wte), Error);
  EXPECT_THROW(logits_forward(logits, f32({4, 2}), wte), Error);
}

}  // namespace
}  // namespace tessera
