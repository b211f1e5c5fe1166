#include "trainer/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "parallel/zero_optimizer.h"
#include "tests/support/numeric.h"
#include "trainer/sharded_checkpoint.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
const Gpt2Config kCfg{2, 2, 16, 40, 8};

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("tessera_ckpt_" + std::to_string(testing::test_seed()));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::vector<float> flat(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// A model and optimizer state with non-trivial weights and moments (two AdamW steps).
struct Trained {
  Gpt2 model{kCfg};
  OptimizerState opt;
  explicit Trained(uint64_t seed) {
    std::mt19937_64 rng(seed);
    model.init_weights(seed);
    parallel::LocalCommunicator dp("dp");
    parallel::DistributedAdamW adamw(model.params(), dp, 0, {});
    for (int step = 0; step < 2; ++step) {
      for (size_t u = 0; u < model.params().units().size(); ++u) {
        Tensor g = model.params().unit_grads(static_cast<int>(u));
        testing::fill_normal(g, rng, 0.1f);
      }
      adamw.step(1e-3);
    }
    adamw.gather_moments(opt.exp_avg, opt.exp_avg_sq);
    opt.steps = adamw.steps_taken();
  }
};

TEST(Checkpoint, RoundTripsWeightsMomentsAndState) {
  TempDir tmp;
  Trained a(1);
  const TrainerState st{2, {3, 17}, 4.25, {1024.0, 7}};
  const std::string dir = save_checkpoint(tmp.path.string(), a.model, &a.opt, st, "", 2);
  EXPECT_EQ(fs::path(dir).filename(), "step_000002");
  EXPECT_EQ(latest_checkpoint(tmp.path.string()), dir);
  for (const char* f :
       {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json"})
    EXPECT_TRUE(fs::exists(fs::path(dir) / f)) << f;

  Trained b(2);
  const TrainerState loaded = load_any_checkpoint(dir, b.model, &b.opt);
  EXPECT_EQ(loaded.step, 2);
  EXPECT_EQ(loaded.loader.epoch, 3u);
  EXPECT_EQ(loaded.loader.position, 17u);
  EXPECT_EQ(loaded.train_loss, 4.25);
  EXPECT_EQ(loaded.loss_scale.scale, 1024.0);
  EXPECT_EQ(loaded.loss_scale.good_steps, 7);
  EXPECT_EQ(b.opt.steps, 2);
  EXPECT_EQ(flat(a.model.params().gather_flat(false)), flat(b.model.params().gather_flat(false)));
  for (const ParameterEntry& e : a.model.params().entries()) {
    EXPECT_EQ(flat(a.opt.exp_avg.carve(e.offset, e.shape)),
              flat(b.opt.exp_avg.carve(e.offset, e.shape)))
        << e.name;
    EXPECT_EQ(flat(a.opt.exp_avg_sq.carve(e.offset, e.shape)),
              flat(b.opt.exp_avg_sq.carve(e.offset, e.shape)))
        << e.name;
  }
  EXPECT_EQ(read_checkpoint_model_config(dir).d_model, kCfg.d_model);
}

TEST(Checkpoint, AHuggingFaceFolderLoadsItsWeights) {
  // config.json and model.safetensors alone (an export, or a folder from the Hub's layout):
  // weights load for inference; resuming training from it is a clear error.
  TempDir tmp;
  Trained a(3);
  const std::string dir = save_checkpoint(tmp.path.string(), a.model, &a.opt, {1, {}, 0}, "", 2);
  fs::remove(fs::path(dir) / "trainer_state.json");
  fs::remove(fs::path(dir) / "optimizer.safetensors");
  Gpt2 b{kCfg};
  EXPECT_EQ(load_any_checkpoint(dir, b, nullptr).step, 0);
  EXPECT_EQ(flat(b.params().gather_flat(false)), flat(a.model.params().gather_flat(false)));
  OptimizerState moments;
  try {
    load_any_checkpoint(dir, b, &moments);
    FAIL() << "resumed training without a trainer state";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("trainer_state.json"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, KeepsNewestAndIgnoresUnfinishedFolders) {
  TempDir tmp;
  Trained a(3);
  for (int64_t step : {1, 2, 3, 4})
    save_checkpoint(tmp.path.string(), a.model, &a.opt, {step, {}, 0.0}, "", 2);
  EXPECT_FALSE(fs::exists(tmp.path / "step_000002"));
  EXPECT_TRUE(fs::exists(tmp.path / "step_000003"));
  // A folder a killed run left half-written is never picked.
  fs::create_directories(tmp.path / "step_000009.tmp");
  std::ofstream(tmp.path / "step_000009.tmp" / "model.safetensors") << "partial";
  fs::remove(tmp.path / "latest");
  EXPECT_EQ(fs::path(latest_checkpoint(tmp.path.string())).filename(), "step_000004");
  EXPECT_EQ(latest_checkpoint((tmp.path / "nothing").string()), "");
}

TEST(Checkpoint, MismatchAndCorruptionGiveClearErrors) {
  TempDir tmp;
  Trained a(4);
  const std::string dir = save_checkpoint(tmp.path.string(), a.model, &a.opt, {1, {}, 0.0}, "", 2);
  Gpt2 other({2, 2, 32, 40, 8});
  try {
    load_any_checkpoint(dir, other, nullptr);
    FAIL() << "loaded into a different model shape";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d_model=16"), std::string::npos) << e.what();
  }
  // Truncate the weights file: the loader must say which file is bad.
  const fs::path weights = fs::path(dir) / "model.safetensors";
  fs::resize_file(weights, fs::file_size(weights) / 2);
  Trained b(5);
  try {
    load_any_checkpoint(dir, b.model, &b.opt);
    FAIL() << "loaded a truncated checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_any_checkpoint((tmp.path / "missing").string(), b.model, nullptr), Error);
}

}  // namespace
}  // namespace tessera
