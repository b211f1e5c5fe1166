// Autoregressive sampling from a Gpt2 (full-context forward per token; the serving tier's paged
// KV cache is separate). Deterministic for a given seed.
#pragma once

#include <cstdint>
#include <vector>

#include "model/gpt2.h"

namespace tessera {

struct SamplingConfig {
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 40;        // 0: whole vocabulary
  uint64_t seed = 0;
};

// Returns `prompt` followed by up to max_new sampled tokens, stopping after stop_token (if >= 0).
// The context fed to the model is the last max_seq_len tokens. Throws Error on an empty prompt.
std::vector<int32_t> generate(const Gpt2& model, const std::vector<int32_t>& prompt,
                              int64_t max_new, const SamplingConfig& sampling,
                              int32_t stop_token = -1);

// Picks a token from logits (V) with temperature and top-k; u is uniform in [0, 1).
int32_t sample_token(const float* logits, int64_t vocab, double temperature, int64_t top_k,
                     double u);

}  // namespace tessera
