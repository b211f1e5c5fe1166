// fp16 dynamic loss scaling: the scaler's schedule, and the optimizer's handling of scaled and
// overflowed gradients (on the CPU: the logic does not depend on where the GEMMs ran).
#include "trainer/loss_scaler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <tuple>

#include "model/gpt2.h"
#include "parallel/zero_optimizer.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

TEST(LossScaler, HalvesOnOverflowAndDoublesAfterCleanSteps) {
  LossScaler s(true, {1024.0, 0}, /*growth_interval=*/3);
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));  // overflow: skipped, halved, the clean run starts again
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.skipped_steps(), 1);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_EQ(s.state().good_steps, 0);

  LossScaler off(false);
  EXPECT_EQ(off.scale(), 1.0);
  EXPECT_TRUE(off.update(false));  // disabled: nothing is skipped
  EXPECT_THROW(LossScaler(true, {0.0, 0}), Error);
}

// Two copies of a small model with the same weights; gradients written directly.
struct Pair {
  Gpt2 a{{2, 2, 16, 40, 8}}, b{{2, 2, 16, 40, 8}};
  parallel::LocalCommunicator dp{"dp"};
  Pair() {
    a.init_weights(5);
    b.init_weights(5);
  }
};

TEST(LossScaler, ScaledGradientsGiveTheUnscaledStep) {
  for (const int stage : {0, 2}) {
    Pair p;
    parallel::DistributedAdamW oa(p.a.params(), p.dp, stage, {}), ob(p.b.params(), p.dp, stage, {});
    std::mt19937_64 rng(testing::test_seed());
    // One backward's worth of gradients through the optimizer's hooks (stage 2 keeps unit
    // gradients only between a unit's acquire and the end of the micro-batch): b's are a's
    // times 1024, as a scaled loss would make them.
    for (auto [model, opt, factor] :
         {std::tuple{&p.a, &oa, 1.0f}, std::tuple{&p.b, &ob, 1024.0f}}) {
      std::mt19937_64 same(rng);
      opt->begin_micro_batch(true);
      for (size_t u = 0; u < model->params().units().size(); ++u) {
        const int unit = static_cast<int>(u);
        opt->acquire(unit, UnitHooks::Pass::backward);
        Tensor g = model->params().unit_grads(unit);
        testing::fill_normal(g, same, 0.1f);
        for (int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] *= factor;
        opt->release(unit);
        opt->grads_ready(unit);
      }
      opt->end_micro_batch();
    }
    const double na = oa.step(1e-2), nb = ob.step(1e-2, {1024.0, true});
    EXPECT_NEAR(nb, na, 1e-6 * na) << "stage " << stage;
    EXPECT_LT(testing::rel_error(p.b.params().gather_flat(false),
                                 testing::to_f64(p.a.params().gather_flat(false))),
              1e-6)
        << "stage " << stage;
  }
}

TEST(LossScaler, AnOverflowSkipsTheStepAndLeavesEverythingAsItWas) {
  Pair p;
  parallel::DistributedAdamW o(p.a.params(), p.dp, 0, {});
  const Tensor before = p.a.params().gather_flat(false);
  Tensor g = p.a.params().unit_grads(0);
  g.data<float>()[3] = std::numeric_limits<float>::infinity();
  const double norm = o.step(1e-2, {65536.0, true});
  EXPECT_FALSE(std::isfinite(norm));
  EXPECT_EQ(o.steps_taken(), 0);
  EXPECT_EQ(testing::rel_error(p.a.params().gather_flat(false), testing::to_f64(before)), 0.0);
  EXPECT_EQ(testing::rel_error(p.a.params().gather_flat(true),
                               std::vector<double>(p.a.params().total(), 0.0)),
            0.0)
      << "the overflowed gradients were not cleared";
  // Without skip_nonfinite an overflow stays an error.
  p.a.params().unit_grads(0).data<float>()[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(o.step(1e-2), Error);
}

}  // namespace
}  // namespace tessera
