// GPT-2 model structure tests. Numerical agreement with PyTorch is tests/trainer/test_parity_torch.
#include "model/gpt2.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "model/generate.h"
#include "parallel/communicator.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

const Gpt2Config kTiny{/*n_layer=*/3, /*n_head=*/2, /*d_model=*/32, /*vocab_size=*/53,
                       /*max_seq_len=*/12};

std::vector<float> flat(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST(Gpt2, ParameterNamesCountAndLayout) {
  Gpt2 model(kTiny);
  EXPECT_EQ(model.params().count(), kTiny.num_params());
  EXPECT_EQ(model.params().entries().front().name, "transformer.wte.weight");
  EXPECT_EQ(model.params().entries().back().name, "transformer.ln_f.bias");
  EXPECT_EQ(model.params().param("transformer.h.2.attn.c_attn.weight").shape(), (Shape{32, 96}));
  EXPECT_EQ(model.params().param("transformer.h.0.mlp.c_proj.weight").shape(), (Shape{128, 32}));
  for (const ParameterEntry& e : model.params().entries()) {
    EXPECT_EQ(e.offset % 16, 0) << e.name << " is not 64-byte aligned";
    EXPECT_EQ(e.weight_decay, e.shape.size() == 2) << e.name;
  }
  EXPECT_THROW(model.params().param("transformer.h.3.ln_1.weight"), Error);
}

TEST(Gpt2, ParameterLayoutIsTheModelsWithoutBuffers) {
  parallel::LocalCommunicator tp("tp", 1, 2);
  const Gpt2Layout layout{.param_shards = 3, .tp = &tp, .pp_rank = 1, .pp_size = 2};
  const Gpt2Config cfg{3, 2, 32, 54, 12};  // an even vocabulary for two tp ranks
  const Gpt2 model(cfg, Device::cpu(), layout);
  const ParameterSet plan = Gpt2::parameter_layout(cfg, layout);
  EXPECT_EQ(plan.total(), model.params().total());
  ASSERT_EQ(plan.entries().size(), model.params().entries().size());
  for (size_t i = 0; i < plan.entries().size(); ++i) {
    EXPECT_EQ(plan.entries()[i].name, model.params().entries()[i].name);
    EXPECT_EQ(plan.entries()[i].offset, model.params().entries()[i].offset);
    EXPECT_EQ(plan.entries()[i].shape, model.params().entries()[i].shape);
  }
  ASSERT_EQ(plan.units().size(), model.params().units().size());
  for (size_t u = 0; u < plan.units().size(); ++u)
    EXPECT_EQ(plan.units()[u].numel, model.params().units()[u].numel);
  EXPECT_ANY_THROW(plan.unit_params(0));  // no buffers
}

TEST(Gpt2, InitFollowsGpt2) {
  Gpt2 model({4, 4, 128, 1000, 64});
  model.init_weights(7);
  auto stddev = [](const Tensor& t) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t.numel(); ++i)
      s += t.data<float>()[i], s2 += double(t.data<float>()[i]) * t.data<float>()[i];
    const double m = s / t.numel();
    return std::sqrt(s2 / t.numel() - m * m);
  };
  EXPECT_NEAR(stddev(model.params().param("transformer.wte.weight")), 0.02, 0.001);
  EXPECT_NEAR(stddev(model.params().param("transformer.h.1.attn.c_proj.weight")),
              0.02 / std::sqrt(8.0), 0.0005);
  EXPECT_EQ(model.params().param("transformer.h.0.ln_1.weight").data<float>()[5], 1.0f);
  EXPECT_EQ(model.params().param("transformer.h.0.mlp.c_fc.bias").data<float>()[5], 0.0f);
  for (const char* bias : {"transformer.h.0.ln_1.bias", "transformer.h.1.ln_2.bias",
                           "transformer.ln_f.bias", "transformer.h.1.attn.c_proj.bias"}) {
    const Tensor b = model.params().param(bias);
    for (int64_t i = 0; i < b.numel(); ++i) ASSERT_EQ(b.data<float>()[i], 0.0f) << bias << " " << i;
  }
  EXPECT_EQ(model.params().param("transformer.ln_f.weight").data<float>()[0], 1.0f);
  Gpt2 again({4, 4, 128, 1000, 64});
  again.init_weights(7);
  EXPECT_EQ(flat(model.params().gather_flat(false)), flat(again.params().gather_flat(false)));
}

// Recomputing activations in backward must give exactly the gradients of keeping them.
TEST(Gpt2, RecomputeGivesIdenticalGradients) {
  std::mt19937_64 rng(testing::test_seed());
  Gpt2 model(kTiny);
  model.init_weights(3);
  const Tensor x = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  const Tensor y = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  std::vector<float> grads[2];
  double losses[2];
  for (int recompute = 0; recompute < 2; ++recompute) {
    model.params().zero_grads();
    Gpt2Activations acts = model.make_activations(2, 12, recompute == 1);
    model.forward(acts, x);
    losses[recompute] = model.backward(acts, y, 1.0f / 24);
    grads[recompute] = flat(model.params().gather_flat(true));
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(grads[0], grads[1]);
}

// 16-bit compute on the CPU (the reference of the CUDA tensor-core path): the activations only
// GEMMs read (and the gradients dqkv and dfc) are stored in bf16 / f16; the loss and the
// gradients stay near the fp32 model's
// (seen: gradients 3e-3 apart in bf16, 4e-4 in f16) but not equal to them (the rounding ran),
// repeat bit for bit, and recomputation gives exactly the stored activations' gradients.
TEST(Gpt2, SixteenBitComputeOnTheCpu) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Tensor x = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  const Tensor y = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  auto run = [&](DType gemm, bool recompute, std::vector<float>& grads) {
    Gpt2 model(kTiny);
    model.init_weights(seed % 1000);
    model.set_gemm_dtype(gemm);
    Gpt2Activations acts = model.make_activations(2, 12, recompute);
    const BlockActivations& a = acts.block[0];
    for (const Tensor* t : {&a.ln1, &a.qkv, &a.att, &a.ln2, &a.fc, &a.fc_gelu})
      EXPECT_EQ(t->dtype(), gemm);
    EXPECT_EQ(a.res1.dtype(), DType::f32);
    EXPECT_EQ(acts.scratch.dqkv.dtype(), gemm);
    EXPECT_EQ(acts.scratch.dfc.dtype(), gemm);
    model.forward(acts, x);
    const double loss = model.backward(acts, y, 1.0f / 24);
    grads = flat(model.params().gather_flat(true));
    return loss;
  };
  std::vector<float> g32, g16, again, recomputed;
  const double l32 = run(DType::f32, false, g32);
  for (const DType half : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(half));
    const double l16 = run(half, false, g16);
    EXPECT_NEAR(l16, l32, 1e-3 * l32);
    const std::vector<double> a(g16.begin(), g16.end()), b(g32.begin(), g32.end());
    const double err = testing::rel_error(a, b);
    EXPECT_LT(err, half == DType::bf16 ? 3e-2 : 5e-3);
    EXPECT_GT(err, 1e-6);
    EXPECT_EQ(run(half, false, again), l16);
    EXPECT_EQ(again, g16);
    EXPECT_EQ(run(half, true, recomputed), l16);
    EXPECT_EQ(recomputed, g16);
  }
}

// Two pipeline stages of a 16-bit model on the CPU give the single-stage model's loss and
// gradients bit for bit: the last stage hands the first its dresid in f32, and the first rounds it
// once for its GEMMs and bias sums, the bits the single-stage model's layernorm backward writes in
// its 16-bit copy. (wte's gradient is left out: its two tied copies are summed across stages.)
TEST(Gpt2, SixteenBitPipelineStagesGiveTheSingleStageGradients) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Tensor x = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  const Tensor y = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  const float dloss = 1.0f / 24;
  Gpt2 whole(kTiny);
  whole.init_weights(seed % 1000);
  whole.set_gemm_dtype(DType::bf16);
  Gpt2Activations wa = whole.make_activations(2, 12, false);
  whole.forward(wa, x);
  const double loss = whole.backward(wa, y, dloss);

  Gpt2 first(kTiny, Device::cpu(), {.pp_rank = 0, .pp_size = 2});
  Gpt2 last(kTiny, Device::cpu(), {.pp_rank = 1, .pp_size = 2});
  for (Gpt2* stage : {&first, &last}) {
    stage->set_gemm_dtype(DType::bf16);
    for (const ParameterEntry& e : stage->params().entries())
      stage->params().param(e).copy_from(whole.params().param(e.name));
  }
  Gpt2Activations a0 = first.make_activations(2, 12, false);
  Gpt2Activations a1 = last.make_activations(2, 12, false);
  first.forward(a0, x);
  a1.resid[0].copy_from(a0.output());  // what the pipeline's p2p carries
  last.forward(a1, x);
  EXPECT_EQ(last.backward(a1, y, dloss), loss);
  a0.dresid.copy_from(a1.dresid);
  first.backward(a0, y, dloss);
  int compared = 0;
  for (const Gpt2* stage : {&first, &last})
    for (const ParameterEntry& e : stage->params().entries()) {
      if (e.name == "transformer.wte.weight") continue;
      EXPECT_EQ(flat(stage->params().grad(e)), flat(whole.params().grad(e.name))) << e.name;
      ++compared;
    }
  EXPECT_EQ(compared, static_cast<int>(whole.params().entries().size()) - 1);
}

// The blocks' weights rounded once per forward (Gpt2::rounds_weights) change no bit: the same
// loss and gradients as a model whose hooks free parameters (as ZeRO-3's do), where every GEMM
// rounds its weight itself; and after the weights change, the next forward rounds them again.
TEST(Gpt2, RoundingTheWeightsOnceChangesNoBit) {
  struct FreeingHooks final : UnitHooks {
    void acquire(int, Pass) override {}
    void release(int) override {}
    void grads_ready(int) override {}
    bool keeps_parameters() const override { return false; }
  };
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Tensor x = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  const Tensor y = testing::random_tokens(2, 12, kTiny.vocab_size, rng);
  auto run = [&](bool keep, bool recompute, std::vector<float>& grads) {
    Gpt2 model(kTiny);
    model.init_weights(seed % 1000);
    model.set_gemm_dtype(DType::bf16);
    FreeingHooks hooks;
    if (!keep) model.set_hooks(&hooks);
    EXPECT_EQ(model.rounds_weights(), keep);
    Gpt2Activations acts = model.make_activations(2, 12, recompute);
    model.forward(acts, x);
    model.backward(acts, y, 1.0f / 24);
    for (const char* name :
         {"transformer.h.1.mlp.c_fc.weight", "transformer.h.2.attn.c_attn.weight"})
      model.params().param(name).data<float>()[5] += 0.5f;  // a change the copy must follow
    model.params().zero_grads();
    model.forward(acts, x);
    const double loss = model.backward(acts, y, 1.0f / 24);
    grads = flat(model.params().gather_flat(true));
    return loss;
  };
  for (const bool recompute : {false, true}) {
    std::vector<float> kept, freed;
    EXPECT_EQ(run(true, recompute, kept), run(false, recompute, freed));
    EXPECT_EQ(kept, freed);
  }
}

// The loss at GPT-2 init is close to ln(V) (near-uniform predictions) and backward returns it.
TEST(Gpt2, InitialLossNearLogVocab) {
  std::mt19937_64 rng(testing::test_seed());
  Gpt2 model(kTiny);
  model.init_weights(11);
  Gpt2Activations acts = model.make_activations(3, 10, false);
  const Tensor x = testing::random_tokens(3, 10, kTiny.vocab_size, rng);
  const Tensor y = testing::random_tokens(3, 10, kTiny.vocab_size, rng);
  model.forward(acts, x);
  const double eval = model.loss(acts, y);
  EXPECT_NEAR(eval, std::log(53.0), 0.1);
  EXPECT_EQ(model.backward(acts, y, 1.0f / 30), eval);
}

// Causality: changing a later token does not change earlier logits.
TEST(Gpt2, LogitsAreCausal) {
  std::mt19937_64 rng(testing::test_seed());
  Gpt2 model(kTiny);
  model.init_weights(5);
  Tensor x = testing::random_tokens(1, 12, kTiny.vocab_size, rng);
  Gpt2Activations acts = model.make_activations(1, 12, false);
  Tensor a = Tensor::empty({12, kTiny.vocab_size}, DType::f32);
  Tensor b = Tensor::empty({12, kTiny.vocab_size}, DType::f32);
  model.forward(acts, x);
  model.logits(a, acts, false);
  x.data<int32_t>()[8] = (x.data<int32_t>()[8] + 1) % kTiny.vocab_size;
  model.forward(acts, x);
  model.logits(b, acts, false);
  const int64_t v = kTiny.vocab_size;
  EXPECT_EQ(0, std::memcmp(a.data<float>(), b.data<float>(), 8 * v * sizeof(float)));
  EXPECT_NE(0, std::memcmp(a.data<float>() + 8 * v, b.data<float>() + 8 * v, v * sizeof(float)));
}

TEST(Gpt2, BadInputsThrow) {
  EXPECT_THROW(Gpt2({2, 3, 32, 50, 8}), Error);  // d_model not a multiple of n_head
  Gpt2 model(kTiny);
  EXPECT_THROW(model.make_activations(1, 13, false), Error);  // longer than max_seq_len
  Gpt2Activations acts = model.make_activations(1, 4, false);
  Tensor x = Tensor::zeros({1, 5}, DType::i32);
  EXPECT_THROW(model.forward(acts, x), Error);  // shape differs from the activations
  Tensor bad = Tensor::zeros({1, 4}, DType::i32);
  bad.data<int32_t>()[2] = 53;  // outside the vocabulary
  EXPECT_THROW(model.forward(acts, bad), Error);
}

TEST(Generate, GreedyIsDeterministicAndStops) {
  Gpt2 model(kTiny);
  model.init_weights(9);
  const std::vector<int32_t> prompt{1, 2, 3};
  const auto a = generate(model, prompt, 20, {0.0, 0, 1});
  const auto b = generate(model, prompt, 20, {0.0, 0, 2});
  EXPECT_EQ(a, b);           // greedy ignores the seed
  ASSERT_EQ(a.size(), 23u);  // runs past max_seq_len by cropping the context
  const auto s1 = generate(model, prompt, 20, {1.0, 10, 42});
  const auto s2 = generate(model, prompt, 20, {1.0, 10, 42});
  EXPECT_EQ(s1, s2);
  const auto stopped = generate(model, prompt, 20, {0.0, 0, 0}, /*stop_token=*/a[3]);
  EXPECT_EQ(stopped.size(), 4u);
  EXPECT_THROW(generate(model, {}, 5, {}), Error);
}

TEST(Generate, SampleTokenRespectsTopK) {
  const float logits[5] = {0.0f, 3.0f, 1.0f, 2.5f, -1.0f};
  EXPECT_EQ(sample_token(logits, 5, 0.0, 0, 0.99), 1);  // greedy
  for (double u : {0.0, 0.3, 0.6, 0.999}) {
    const int32_t t = sample_token(logits, 5, 1.0, 2, u);
    EXPECT_TRUE(t == 1 || t == 3) << u;
  }
  EXPECT_EQ(sample_token(logits, 5, 1.0, 2, 0.0), 1);
  EXPECT_EQ(sample_token(logits, 5, 1.0, 2, 0.999), 3);
}

}  // namespace
}  // namespace tessera
