// End-to-end training on a small synthetic corpus in the Brown format: the loss falls, validation
// and checkpoints happen on schedule, and a resumed run continues the loss curve bit for bit.
#include "trainer/train_loop.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "tests/support/numeric.h"
#include "tests/support/train_fixture.h"
#include "trainer/checkpoint.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

class TrainLoop : public testing::TinyJobTest {};

TEST_F(TrainLoop, LossFallsAndResumeContinuesBitForBit) {
  const TrainSummary full = run_training(job("full", {"checkpoint.resume=none"}), log_);
  ASSERT_EQ(full.train_losses.size(), 12u);
  EXPECT_LT(full.train_losses.back(), full.train_losses.front() - 1.0);
  ASSERT_EQ(full.val_losses.size(), 3u);  // steps 4, 8, 12
  EXPECT_EQ(full.val_losses[2].first, 12);
  EXPECT_LT(full.val_losses[2].second, full.val_losses[0].second);
  EXPECT_FALSE(full.sample.empty());
  EXPECT_TRUE(fs::exists(root_ / "full/checkpoints/step_000006/model.safetensors"));
  EXPECT_TRUE(fs::exists(root_ / "full/checkpoints/step_000012/tokenizer.json"));
  EXPECT_NE(log_text_.str().find("tok/s"), std::string::npos);

  // A second run that starts from the step-6 checkpoint reproduces steps 7..12 exactly.
  fs::create_directories(root_ / "resumed/checkpoints");
  fs::copy(root_ / "full/checkpoints/step_000006", root_ / "resumed/checkpoints/step_000006");
  const TrainSummary resumed = run_training(job("resumed"), log_);
  EXPECT_EQ(resumed.first_step, 6);
  ASSERT_EQ(resumed.train_losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(resumed.train_losses[i], full.train_losses[6 + i]) << "step " << 7 + i;
}

TEST_F(TrainLoop, MissingCorpusIsOneClearError) {
  JobConfig j = job("x", {"data.corpus_dir=" + (root_ / "nope").string(),
                          "data.dir=" + (root_ / "nodata").string()});
  try {
    run_training(j, log_);
    FAIL() << "trained without a corpus";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fetch_corpus"), std::string::npos) << e.what();
  }
}

TEST_F(TrainLoop, CheckpointOfAnotherShapeIsRefused) {
  run_training(job("a", {"train.steps=2", "eval.every=0", "sample.tokens=0"}), log_);
  JobConfig other = job("a", {"model.d_model=64", "train.steps=4"});
  EXPECT_THROW(run_training(other, log_), Error);
}

}  // namespace
}  // namespace tessera
