// Whole-model parity with PyTorch (like llm.c's test_gpt2): a tiny GPT-2 from a seed is saved as
// safetensors, tests/python/gpt2_reference.py recomputes logits, loss, every gradient and 10
// AdamW steps in float64 with Debian's python3-torch, and Tessera must agree to 1e-4.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/safetensors.h"
#include "model/gpt2.h"
#include "parallel/zero_optimizer.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
constexpr const char* kPython = "/usr/bin/python3";

bool torch_available() {
  const std::string cmd = std::string(kPython) + " -c 'import torch, numpy' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

TEST(ParityTorch, LogitsLossGradientsAndAdamWSteps) {
  if (!torch_available())
    GTEST_SKIP() << kPython << " with torch and numpy not found: apt-get install python3-torch";
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);

  const Gpt2Config cfg{/*n_layer=*/2, /*n_head=*/4, /*d_model=*/64, /*vocab_size=*/97,
                       /*max_seq_len=*/16};
  const int64_t B = 3, T = 16, steps = 10;
  const parallel::AdamWConfig opt_cfg{0.9, 0.95, 1e-8, 0.1, /*grad_clip=*/1.0};
  const double lr = 1e-3;

  Gpt2 model(cfg);
  // Random values everywhere (not GPT-2's zero biases / unit norms) so every path is exercised.
  for (const ParameterEntry& e : model.params().entries()) {
    Tensor p = model.params().param(e);
    const bool norm_weight = e.name.find(".ln_") != std::string::npos && e.name.ends_with("weight");
    testing::fill_normal(p, rng, norm_weight ? 0.2f : 0.08f);
    if (norm_weight)
      for (int64_t i = 0; i < p.numel(); ++i) p.data<float>()[i] += 1.0f;
  }
  Tensor inputs = Tensor::empty({B, T}, DType::i32), targets = Tensor::empty({B, T}, DType::i32);
  for (int64_t i = 0; i < B * T; ++i) {
    inputs.data<int32_t>()[i] = static_cast<int32_t>(rng() % cfg.vocab_size);
    targets.data<int32_t>()[i] = static_cast<int32_t>(rng() % cfg.vocab_size);
  }

  // One folder per process: two test runs at once (a CI clone beside a build tree) do not collide.
  const fs::path dir = fs::temp_directory_path() / ("tessera_parity_" + std::to_string(seed) + "_" +
                                                    std::to_string(::getpid()));
  fs::create_directories(dir);
  std::map<std::string, Tensor> weights;
  for (const ParameterEntry& e : model.params().entries())
    weights[e.name] = model.params().param(e);
  save_safetensors((dir / "model.safetensors").string(), weights, {{"format", "pt"}});
  save_safetensors((dir / "batch.safetensors").string(),
                   {{"inputs", inputs}, {"targets", targets}});
  const nlohmann::json config = {{"n_layer", cfg.n_layer},
                                 {"n_head", cfg.n_head},
                                 {"n_embd", cfg.d_model},
                                 {"vocab_size", cfg.vocab_size},
                                 {"n_positions", cfg.max_seq_len},
                                 {"lr", lr},
                                 {"beta1", opt_cfg.beta1},
                                 {"beta2", opt_cfg.beta2},
                                 {"eps", opt_cfg.eps},
                                 {"weight_decay", opt_cfg.weight_decay},
                                 {"grad_clip", opt_cfg.grad_clip},
                                 {"steps", steps}};
  std::ofstream(dir / "config.json") << config.dump(2);

  const std::string cmd = std::string(kPython) + " " + TESSERA_SOURCE_DIR +
                          "/tests/python/gpt2_reference.py " + dir.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference failed: " << cmd;
  const SafetensorsFile ref = load_safetensors((dir / "reference.safetensors").string());
  auto ref_f64 = [&](const std::string& name) {
    auto it = ref.tensors.find(name);
    EXPECT_NE(it, ref.tensors.end()) << "reference lacks " << name;
    return it == ref.tensors.end() ? std::vector<double>{} : testing::to_f64(it->second);
  };

  // Logits and loss at the initial weights.
  Gpt2Activations acts = model.make_activations(B, T, /*recompute=*/false);
  model.forward(acts, inputs);
  Tensor logits = Tensor::empty({B * T, cfg.vocab_size}, DType::f32);
  model.logits(logits, acts, /*last_only=*/false);
  EXPECT_LT(testing::rel_error(logits, ref_f64("logits")), 1e-4);

  // Gradients of the mean loss.
  const double loss = model.backward(acts, targets, 1.0f / (B * T));
  EXPECT_NEAR(loss, ref_f64("loss")[0], 1e-4 * std::abs(ref_f64("loss")[0]));
  for (const ParameterEntry& e : model.params().entries()) {
    const double err = testing::rel_error(model.params().grad(e), ref_f64("grad." + e.name));
    EXPECT_LT(err, 1e-4) << "gradient of " << e.name;
  }

  // Ten AdamW steps (with clipping and decoupled decay) on the same batch.
  model.params().zero_grads();
  parallel::LocalCommunicator dp("dp");
  parallel::DistributedAdamW opt(model.params(), dp, /*stage=*/0, opt_cfg);
  std::vector<double> losses;
  for (int64_t s = 0; s < steps; ++s) {
    model.forward(acts, inputs);
    losses.push_back(model.backward(acts, targets, 1.0f / (B * T)));
    opt.step(lr);
  }
  const std::vector<double> ref_losses = ref_f64("losses");
  ASSERT_EQ(ref_losses.size(), losses.size());
  for (size_t i = 0; i < losses.size(); ++i)
    EXPECT_NEAR(losses[i], ref_losses[i], 1e-4 * std::abs(ref_losses[i])) << "step " << i;
  for (const ParameterEntry& e : model.params().entries()) {
    std::vector<double> ours = testing::to_f64(model.params().param(e));
    std::vector<double> theirs = ref_f64("final." + e.name);
    if (e.name.ends_with("attn.c_attn.bias")) {
      ours = testing::without_key_bias(ours);
      theirs = testing::without_key_bias(theirs);
    }
    EXPECT_LT(testing::rel_error(ours, theirs), 1e-4)
        << "weights of " << e.name << " after " << steps << " steps";
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
