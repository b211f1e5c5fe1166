// ZeRO stages 0-3 over the MPI data-parallel group (every rank of the world): the same losses and
// weights as one process training on the whole batch, and the model state and traffic of the
// ZeRO paper's formulas.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>

#include "model/gpt2.h"
#include "parallel/comm_mpi.h"
#include "parallel/zero_optimizer.h"
#include "tests/parallel/mpi_test_util.h"
#include "tests/support/numeric.h"

namespace tessera::parallel {
namespace {

struct TrainRun {
  std::vector<double> losses;
  std::vector<std::vector<double>> weights;  // per entry after the last step (key bias left out)
};

// `steps` AdamW steps of `accum` micro-batches of (batch, t) tokens; this rank trains on rows
// [r·batch/N, (r+1)·batch/N) of each micro-batch of `dp` (N ranks) at ZeRO `stage`.
TrainRun train(const Gpt2Config& cfg, Communicator& dp, int stage, uint64_t seed, int64_t batch,
               int64_t t, int steps, int accum) {
  const int n = dp.size();
  Gpt2 model(cfg, Device::cpu(), {.param_shards = n});
  model.init_weights(seed);
  // eps = 1e-6, not 1e-8: elements whose gradient is at round-off level (layernorm biases that
  // start at zero, say) would otherwise take full ±lr steps whose sign is decided by the
  // summation order, and the weights of two correct runs would differ by whole steps.
  DistributedAdamW opt(model.params(), dp, stage, {0.9, 0.95, 1e-6, 0.1, 1.0});
  model.set_hooks(&opt);
  const int64_t local = batch / n;
  Gpt2Activations acts = model.make_activations(local, t, /*recompute=*/false);
  std::mt19937_64 rng(seed + 1);
  const float dloss = 1.0f / static_cast<float>(batch * t * accum);
  TrainRun run;
  for (int s = 0; s < steps; ++s) {
    double loss = 0.0;
    for (int m = 0; m < accum; ++m) {
      const Tensor x = testing::random_tokens(batch, t, cfg.vocab_size, rng);
      const Tensor y = testing::random_tokens(batch, t, cfg.vocab_size, rng);
      opt.begin_micro_batch(m + 1 == accum);
      model.forward(acts, x.narrow(dp.rank() * local, local));
      loss += model.backward(acts, y.narrow(dp.rank() * local, local), dloss);
      opt.end_micro_batch();
    }
    Tensor l = Tensor::empty({1}, DType::f32);
    l.data<float>()[0] = static_cast<float>(loss / accum);
    dp.all_reduce(l, ReduceOp::avg);
    run.losses.push_back(l.data<float>()[0]);
    opt.step(1e-3 * (s + 1));
  }
  opt.gather_all_params();
  for (const ParameterEntry& e : model.params().entries()) {
    std::vector<double> w = testing::to_f64(model.params().param(e));
    run.weights.push_back(e.name.ends_with("c_attn.bias") ? testing::without_key_bias(w) : w);
  }
  return run;
}

class Zero : public ::testing::TestWithParam<int> {};

// Losses of 4 steps (2 micro-batches each) equal those of one process with the whole batch within
// 1e-5 relative, and every final weight tensor within 1e-4 (fp32 summation order, through Adam).
TEST_P(Zero, MatchesOneProcess) {
  const int stage = GetParam();
  const uint64_t seed = testing::shared_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", ZeRO stage " + std::to_string(stage));
  MpiCommunicator dp(MPI_COMM_WORLD, "dp", 60.0);
  const Gpt2Config cfg{/*n_layer=*/2, /*n_head=*/2, /*d_model=*/32, /*vocab_size=*/67,
                       /*max_seq_len=*/8};
  const int64_t batch = 2 * dp.size(), t = 8;
  LocalCommunicator one("one");
  const TrainRun ref = train(cfg, one, 0, seed, batch, t, 4, 2);
  const TrainRun got = train(cfg, dp, stage, seed, batch, t, 4, 2);
  ASSERT_EQ(got.losses.size(), ref.losses.size());
  for (size_t i = 0; i < ref.losses.size(); ++i)
    EXPECT_NEAR(got.losses[i], ref.losses[i], 1e-5 * std::abs(ref.losses[i])) << "step " << i;
  for (size_t i = 0; i < ref.weights.size(); ++i)
    EXPECT_LT(testing::adamw_weight_error(got.weights[i], ref.weights[i], 1e-3 * (1 + 2 + 3 + 4)),
              1e-4)
        << "entry " << i;
}

INSTANTIATE_TEST_SUITE_P(Stages, Zero, ::testing::Values(0, 1, 2, 3));

// Model state after a step and bytes on the wire per step against the ZeRO paper's formulas
// (fp32 AdamW: 4 + 4 + 8 bytes per parameter), within 2% for a model whose padding is small.
TEST(ZeroAccounting, MatchesFormulas) {
  MpiCommunicator dp(MPI_COMM_WORLD, "dp", 60.0);
  const int n = dp.size();
  const Gpt2Config cfg{/*n_layer=*/2, /*n_head=*/4, /*d_model=*/128, /*vocab_size=*/2048,
                       /*max_seq_len=*/16};
  const double psi = static_cast<double>(cfg.num_params());
  const double ring = static_cast<double>(n - 1) / n;
  const double expected_state[4] = {16 * psi, 8 * psi + 8 * psi / n, 4 * psi + 12 * psi / n,
                                    16 * psi / n};
  const double expected_wire[4] = {2 * ring * 4 * psi, 2 * ring * 4 * psi, 2 * ring * 4 * psi,
                                   3 * ring * 4 * psi};
  for (int stage = 0; stage <= 3; ++stage) {
    SCOPED_TRACE("ZeRO stage " + std::to_string(stage) + ", N = " + std::to_string(n));
    Gpt2 model(cfg, Device::cpu(), {.param_shards = n});
    model.init_weights(5);
    DistributedAdamW opt(model.params(), dp, stage, {});
    model.set_hooks(&opt);
    Gpt2Activations acts = model.make_activations(1, 16, false);
    std::mt19937_64 rng(7);
    const Tensor x = testing::random_tokens(1, 16, cfg.vocab_size, rng);
    dp.reset_stats();
    opt.begin_micro_batch(true);
    model.forward(acts, x);
    model.backward(acts, x, 1.0f / 16);
    opt.end_micro_batch();
    opt.step(1e-3);
    const ModelStateBytes b = opt.state_bytes();
    EXPECT_NEAR(static_cast<double>(b.total()), expected_state[stage], 0.02 * expected_state[stage])
        << "params " << b.params << ", grads " << b.grads << ", optimizer " << b.optimizer;
    // Exactly, with the padding that makes every unit split into N chunks:
    const double total = static_cast<double>(model.params().total());
    const double shard = total / (stage == 0 ? 1 : n);
    EXPECT_EQ(b.optimizer, static_cast<uint64_t>(8 * shard));
    EXPECT_EQ(b.grads, static_cast<uint64_t>(4 * (stage >= 2 ? total / n : total)));
    EXPECT_EQ(b.params, static_cast<uint64_t>(4 * (stage == 3 ? total / n : total)));
    const double wire = dp.stats().total_wire_bytes();
    if (n == 1) {
      EXPECT_EQ(wire, 0.0);
    } else {
      EXPECT_NEAR(wire, expected_wire[stage], 0.02 * expected_wire[stage]) << dp.stats().str();
    }
  }
}

}  // namespace
}  // namespace tessera::parallel
