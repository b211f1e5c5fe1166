#include "tests/support/numeric.h"

#include <cstdlib>
#include <string>

namespace tessera::testing {

uint64_t test_seed() {
  if (const char* s = std::getenv("TESSERA_TEST_SEED")) return std::stoull(s);
  return std::random_device{}();
}

void fill_normal(Tensor& t, std::mt19937_64& rng, float stddev) {
  std::normal_distribution<float> dist(0.0f, stddev);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
}

Tensor randn(const Shape& shape, std::mt19937_64& rng, float stddev) {
  Tensor t = Tensor::empty(shape, DType::f32);
  fill_normal(t, rng, stddev);
  return t;
}

void fill_uniform(Tensor& t, std::mt19937_64& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
}

void poison(Tensor& t) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
}

std::vector<double> to_f64(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<double>(p, p + t.numel());
}

double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i]))
      return std::numeric_limits<double>::infinity();
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

double rel_error(const Tensor& a, const std::vector<double>& b) {
  return rel_error(to_f64(a), b);
}

double adamw_weight_error(const std::vector<double>& got, const std::vector<double>& want,
                          double lr_sum) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  const double slack = 1e-2 * lr_sum;
  std::vector<double> lessened(got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = got[i] - want[i];
    lessened[i] = want[i] + std::copysign(std::max(std::abs(d) - slack, 0.0), d);
    if (!std::isfinite(d)) lessened[i] = d;
  }
  return rel_error(lessened, want);
}

std::vector<double> finite_diff(const std::function<double(const std::vector<double>&)>& f,
                                std::vector<double> x, double h) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

std::vector<double> without_key_bias(std::vector<double> b) {
  TS_CHECK(b.size() % 3 == 0, "without_key_bias: c_attn.bias must have 3C elements, got ",
           b.size());
  const auto c = static_cast<std::ptrdiff_t>(b.size() / 3);
  b.erase(b.begin() + c, b.begin() + 2 * c);
  return b;
}

Tensor random_tokens(int64_t b, int64_t t, int64_t vocab, std::mt19937_64& rng) {
  Tensor x = Tensor::empty({b, t}, DType::i32);
  for (int64_t i = 0; i < x.numel(); ++i)
    x.data<int32_t>()[i] = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return x;
}

}  // namespace tessera::testing
