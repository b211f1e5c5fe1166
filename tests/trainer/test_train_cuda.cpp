// `tessera train` with device: cuda. On a GPU: the fixture's tiny job gives the CPU run's losses
// to fp32 round-off, saves checkpoints that a CUDA run resumes from, and samples. Everywhere: a
// CUDA job without a device is one clear error (CI's case).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "tests/support/cuda_test.h"
#include "tests/support/numeric.h"
#include "tests/support/train_fixture.h"
#include "trainer/train_loop.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

class TrainCuda : public testing::TinyJobTest {};

TEST_F(TrainCuda, WithoutADeviceIsOneClearError) {
  if (cuda_available()) GTEST_SKIP() << "this machine has a CUDA device";
  try {
    run_training(job("nodev", {"device=cuda"}), log_);
    FAIL() << "trained on cuda without a device";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device is visible"), std::string::npos)
        << e.what();
  }
}

TEST_F(TrainCuda, MatchesTheCpuRunAndResumes) {
  TS_REQUIRE_CUDA_DEVICE();
  const TrainSummary cpu = run_training(job("cpu", {"checkpoint.resume=none"}), log_);
  const TrainSummary gpu =
      run_training(job("gpu", {"checkpoint.resume=none", "device=cuda"}), log_);
  ASSERT_EQ(gpu.train_losses.size(), cpu.train_losses.size());
  for (size_t i = 0; i < cpu.train_losses.size(); ++i)
    EXPECT_NEAR(gpu.train_losses[i], cpu.train_losses[i], 1e-4 * cpu.train_losses[i])
        << "step " << i + 1;
  ASSERT_EQ(gpu.val_losses.size(), cpu.val_losses.size());
  for (size_t i = 0; i < cpu.val_losses.size(); ++i)
    EXPECT_NEAR(gpu.val_losses[i].second, cpu.val_losses[i].second,
                1e-4 * cpu.val_losses[i].second);
  EXPECT_FALSE(gpu.sample.empty());

  // A CUDA run from the CUDA run's step-6 checkpoint continues its curve.
  fs::create_directories(root_ / "resumed/checkpoints");
  fs::copy(root_ / "gpu/checkpoints/step_000006", root_ / "resumed/checkpoints/step_000006");
  const TrainSummary resumed = run_training(job("resumed", {"device=cuda"}), log_);
  EXPECT_EQ(resumed.first_step, 6);
  ASSERT_EQ(resumed.train_losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_NEAR(resumed.train_losses[i], gpu.train_losses[6 + i], 1e-6 * gpu.train_losses[6 + i])
        << "step " << 7 + i;
}

TEST_F(TrainCuda, HalfPrecisionRunsTrain) {
  // bf16 and fp16 GEMMs (fp16 with loss scaling): the loss falls as the fp32 run's does, within a
  // few percent of it at the end.
  TS_REQUIRE_CUDA_DEVICE();
  const TrainSummary fp32 =
      run_training(job("fp32", {"checkpoint.resume=none", "device=cuda"}), log_);
  for (const char* precision : {"bf16", "fp16"}) {
    SCOPED_TRACE(precision);
    const TrainSummary half = run_training(
        job(precision,
            {"checkpoint.resume=none", "device=cuda", std::string("train.precision=") + precision}),
        log_);
    ASSERT_EQ(half.train_losses.size(), fp32.train_losses.size());
    EXPECT_LT(half.train_losses.back(), half.train_losses.front() - 1.0);
    EXPECT_NEAR(half.train_losses.back(), fp32.train_losses.back(),
                0.05 * fp32.train_losses.back());
  }
}

}  // namespace
}  // namespace tessera
