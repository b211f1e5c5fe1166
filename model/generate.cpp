#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace tessera {

int32_t sample_token(const float* logits, int64_t vocab, double temperature, int64_t top_k,
                     double u) {
  if (temperature <= 0.0)
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  const int64_t k = (top_k > 0 && top_k < vocab) ? top_k : vocab;
  // Highest logits first; ties by lower id so the choice is deterministic.
  auto higher = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), higher);
  std::vector<double> p(k);
  const double mx = logits[ids[0]];
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[ids[i]] - mx) / temperature);
  double acc = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    acc += p[i] / sum;
    if (u < acc) return ids[i];
  }
  return ids[k - 1];
}

std::vector<int32_t> generate(const Gpt2& model, const std::vector<int32_t>& prompt,
                              int64_t max_new, const SamplingConfig& sampling, int32_t stop_token) {
  TS_CHECK(!prompt.empty(), "generate needs at least one prompt token");
  const Gpt2Config& cfg = model.config();
  std::mt19937_64 rng(sampling.seed);
  std::vector<int32_t> out = prompt;
  Tensor logits = Tensor::empty({1, cfg.vocab_size}, DType::f32, model.params().device());
  for (int64_t i = 0; i < max_new; ++i) {
    const int64_t t = std::min<int64_t>(static_cast<int64_t>(out.size()), cfg.max_seq_len);
    Tensor tokens = Tensor::empty({1, t}, DType::i32);
    std::copy(out.end() - t, out.end(), tokens.data<int32_t>());
    Gpt2Activations acts = model.make_activations(1, t, /*recompute=*/true);
    model.forward(acts, tokens);
    model.logits(logits, acts, /*last_only=*/true);
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const Tensor host = logits.is_cpu() ? logits : logits.to(Device::cpu());
    const int32_t next =
        sample_token(host.data<float>(), cfg.vocab_size, sampling.temperature, sampling.top_k, u);
    out.push_back(next);
    if (next == stop_token) break;
  }
  return out;
}

}  // namespace tessera
