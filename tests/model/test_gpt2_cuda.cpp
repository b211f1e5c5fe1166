// GPT-2 on CUDA against GPT-2 on the CPU (the reference, itself checked against PyTorch): the same
// initial weights, tokens and targets give the same loss and parameter gradients, and the same
// losses over a few AdamW steps (ZeRO stage 0 and 2 over one rank, with recomputation), to fp32
// round-off. Skips without a CUDA device; fails instead under TESSERA_REQUIRE_CUDA.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "model/gpt2.h"
#include "parallel/zero_optimizer.h"
#include "tests/support/cuda_test.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

// Head size 32, odd vocabulary and length: no size is a multiple of a kernel tile.
const Gpt2Config kCfg{/*n_layer=*/2, /*n_head=*/4, /*d_model=*/128, /*vocab_size=*/301,
                      /*max_seq_len=*/40};
constexpr double kTol = 1e-4;  // a whole model: fp32 sums in other orders (cuBLAS vs OpenBLAS)

class Gpt2Cuda : public ::testing::Test {
 protected:
  void SetUp() override { TS_REQUIRE_CUDA_DEVICE(); }
  std::mt19937_64 rng_{testing::test_seed()};
};

TEST_F(Gpt2Cuda, LossAndGradientsMatchTheCpu) {
  const uint64_t seed = rng_();
  Gpt2 cpu(kCfg), gpu(kCfg, Device::cuda(0));
  cpu.init_weights(seed);
  gpu.init_weights(seed);
  EXPECT_EQ(testing::rel_error(gpu.params().gather_flat(false).to(Device::cpu()),
                               testing::to_f64(cpu.params().gather_flat(false))),
            0.0);
  const int64_t b = 3, t = 37;
  const Tensor tokens = testing::random_tokens(b, t, kCfg.vocab_size, rng_);
  const Tensor targets = testing::random_tokens(b, t, kCfg.vocab_size, rng_);
  for (const bool recompute : {false, true}) {
    SCOPED_TRACE(recompute ? "recompute" : "stored activations");
    cpu.params().zero_grads();
    gpu.params().zero_grads();
    Gpt2Activations ca = cpu.make_activations(b, t, recompute);
    Gpt2Activations ga = gpu.make_activations(b, t, recompute);
    cpu.forward(ca, tokens);
    gpu.forward(ga, tokens);
    const double cpu_loss = cpu.backward(ca, targets, 1.0f / (b * t));
    const double gpu_loss = gpu.backward(ga, targets, 1.0f / (b * t));
    EXPECT_NEAR(gpu_loss, cpu_loss, 1e-5 * cpu_loss);
    EXPECT_NEAR(gpu.loss(ga, targets), cpu_loss, 1e-5 * cpu_loss);
    for (const ParameterEntry& e : cpu.params().entries()) {
      const std::vector<double> want = testing::to_f64(cpu.params().grad(e));
      const Tensor got = gpu.params().grad(e.name).to(Device::cpu());
      const bool key_bias = e.name.ends_with("c_attn.bias");  // its exact gradient is zero
      EXPECT_LT(testing::rel_error(key_bias ? testing::without_key_bias(testing::to_f64(got))
                                            : testing::to_f64(got),
                                   key_bias ? testing::without_key_bias(want) : want),
                kTol)
          << e.name;
    }
  }
}

TEST_F(Gpt2Cuda, HalfPrecisionMatchesTheCpusEmulation) {
  // train.precision: bf16 / fp16 (tensor-core GEMMs and attention, 16-bit GEMM inputs) against
  // the CPU model rounding the same values (kernels/convert.h): the loss to 1e-3, gradients to
  // 2e-2 (the two sum in different orders, so a value near a rounding boundary may round the
  // other way); and not equal to the fp32 model's, so the 16-bit path ran.
  for (const DType half : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(half));
    const uint64_t seed = rng_();
    Gpt2 cpu(kCfg), gpu(kCfg, Device::cuda(0)), fp32(kCfg);
    cpu.init_weights(seed);
    gpu.init_weights(seed);
    fp32.init_weights(seed);
    cpu.set_gemm_dtype(half);
    gpu.set_gemm_dtype(half);
    const int64_t b = 2, t = 40;
    const Tensor tokens = testing::random_tokens(b, t, kCfg.vocab_size, rng_);
    const Tensor targets = testing::random_tokens(b, t, kCfg.vocab_size, rng_);
    Gpt2Activations ca = cpu.make_activations(b, t, false), ga = gpu.make_activations(b, t, false),
                    fa = fp32.make_activations(b, t, false);
    EXPECT_EQ(ga.block[0].fc_gelu.dtype(), half);
    cpu.forward(ca, tokens);
    gpu.forward(ga, tokens);
    fp32.forward(fa, tokens);
    const double want = cpu.backward(ca, targets, 1.0f / (b * t));
    const double got = gpu.backward(ga, targets, 1.0f / (b * t));
    fp32.backward(fa, targets, 1.0f / (b * t));
    EXPECT_NEAR(got, want, 1e-3 * want);
    const Tensor grads = gpu.params().gather_flat(true).to(Device::cpu());
    EXPECT_LT(testing::rel_error(grads, testing::to_f64(cpu.params().gather_flat(true))), 2e-2);
    EXPECT_GT(testing::rel_error(grads, testing::to_f64(fp32.params().gather_flat(true))), 1e-7)
        << "no rounding at all: did the 16-bit path run?";
  }
}

TEST_F(Gpt2Cuda, AdamWStepsMatchTheCpu) {
  const uint64_t seed = rng_();
  const int64_t b = 2, t = 40;
  std::vector<std::pair<Tensor, Tensor>> batches;
  for (int i = 0; i < 4; ++i)
    batches.emplace_back(testing::random_tokens(b, t, kCfg.vocab_size, rng_),
                         testing::random_tokens(b, t, kCfg.vocab_size, rng_));
  for (const int stage : {0, 2}) {
    SCOPED_TRACE("ZeRO stage " + std::to_string(stage));
    auto losses = [&](Device device) {
      Gpt2 model(kCfg, device);
      model.init_weights(seed);
      parallel::LocalCommunicator dp("dp");
      // eps 1e-6: with 1e-8, round-off-level gradients take ±lr steps (see test_zero.cpp).
      parallel::DistributedAdamW opt(model.params(), dp, stage, {0.9, 0.95, 1e-6, 0.1, 1.0});
      model.set_hooks(&opt);
      Gpt2Activations acts = model.make_activations(b, t, /*recompute=*/true);
      std::vector<double> out;
      for (const auto& [tokens, targets] : batches) {
        model.forward(acts, tokens);
        opt.begin_micro_batch(true);
        out.push_back(model.backward(acts, targets, 1.0f / (b * t)));
        opt.end_micro_batch();
        opt.step(3e-3);
      }
      return out;
    };
    const std::vector<double> want = losses(Device::cpu()), got = losses(Device::cuda(0));
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], kTol * want[i]) << "step " << i + 1;
  }
}

}  // namespace
}  // namespace tessera
