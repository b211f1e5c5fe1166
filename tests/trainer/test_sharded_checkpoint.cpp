// Sharded checkpoints and conversion between layouts (offline, one process): every conversion is
// pure data movement, so whole tensors come back bit for bit; a rank of any layout loads its part.
#include "trainer/sharded_checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "core/safetensors.h"
#include "parallel/tensor_parallel.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
const Gpt2Config kCfg{/*n_layer=*/4, /*n_head=*/4, /*d_model=*/32, /*vocab_size=*/96,
                      /*max_seq_len=*/16};

std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

class ShardedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tessera_shards_" + std::to_string(testing::test_seed()));
    fs::remove_all(root_);
    std::mt19937_64 rng(testing::test_seed());
    for (const ParameterEntry& e : model_.params().entries()) {
      Tensor p = model_.params().param(e);
      testing::fill_normal(p, rng, 1.0f);
    }
    moments_.exp_avg = Tensor::zeros({model_.params().total()}, DType::f32);
    moments_.exp_avg_sq = Tensor::zeros({model_.params().total()}, DType::f32);
    testing::fill_normal(moments_.exp_avg, rng, 1.0f);
    testing::fill_uniform(moments_.exp_avg_sq, rng, 0.0f, 1.0f);
    moments_.steps = 7;
    consolidated_ =
        save_checkpoint((root_ / "c").string(), model_, &moments_, {7, {0, 42}, 3.5}, "", 1);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Every whole tensor of the checkpoint equals the original, bit for bit.
  void expect_original(const std::string& dir) {
    const CheckpointReader r(dir);
    for (const ParameterEntry& e : model_.params().entries()) {
      EXPECT_EQ(values(r.whole("params", e.name)), values(model_.params().param(e))) << e.name;
      EXPECT_EQ(values(r.whole("exp_avg", e.name)),
                values(moments_.exp_avg.carve(e.offset, e.shape)))
          << e.name;
      EXPECT_EQ(values(r.whole("exp_avg_sq", e.name)),
                values(moments_.exp_avg_sq.carve(e.offset, e.shape)))
          << e.name;
    }
    EXPECT_EQ(read_trainer_state(dir).loader.position, 42u);
  }

  void expect_part(const Gpt2& part, const OptimizerState& moments) const;

  fs::path root_;
  Gpt2 model_{kCfg};
  OptimizerState moments_;
  std::string consolidated_;
};

TEST_F(ShardedCheckpoint, ConvertsBetweenLayoutsBitForBit) {
  const ShardLayout l3d{2, 2, 2, 3, {}};
  const std::string a = (root_ / "3d").string();
  convert_checkpoint(consolidated_, a, &l3d);
  EXPECT_TRUE(is_sharded_checkpoint(a));
  for (int r = 0; r < 8; ++r) {
    char name[40];
    std::snprintf(name, sizeof(name), "rank_%05d.safetensors", r);
    EXPECT_TRUE(fs::exists(fs::path(a) / name)) << name;
  }
  expect_original(a);
  EXPECT_EQ(CheckpointReader(a).layout().str(), "tp=2 pp=2 dp=2 zero=3");

  // Sharded to another sharded layout (uneven stages, dp 3), to an interleaved one (2 virtual
  // stages per rank), and back to one folder.
  const ShardLayout other{1, 2, 3, 1, {1, 3}};
  const std::string b = (root_ / "other").string();
  convert_checkpoint(a, b, &other);
  expect_original(b);
  const ShardLayout interleaved{2, 2, 1, 2, {}, 2};
  const std::string c = (root_ / "interleaved").string();
  convert_checkpoint(b, c, &interleaved);
  expect_original(c);
  EXPECT_EQ(CheckpointReader(c).layout().str(), "tp=2 pp=2 dp=1 zero=2 virtual_stages=2");
  const std::string single = (root_ / "single").string();
  convert_checkpoint(c, single, nullptr);
  EXPECT_FALSE(is_sharded_checkpoint(single));
  expect_original(single);
  EXPECT_THROW(convert_checkpoint(b, single, nullptr), Error);  // never overwrites
}

TEST_F(ShardedCheckpoint, ARankOfAnyLayoutLoadsItsPart) {
  const ShardLayout l{2, 3, 1, 0, {}};
  const std::string dir = (root_ / "tp2pp3").string();
  convert_checkpoint(consolidated_, dir, &l);
  parallel::LocalCommunicator tp("tp", 1, 2);
  Gpt2 part(kCfg, Device::cpu(),
            {1, &tp, /*pp_rank=*/2, /*pp_size=*/3, {}});  // holds h.3, ln_f, head
  OptimizerState moments;
  const TrainerState st = load_any_checkpoint(dir, part, &moments);
  EXPECT_EQ(st.step, 7);
  EXPECT_EQ(moments.steps, 7);
  ASSERT_TRUE(part.params().contains("transformer.h.3.mlp.c_fc.weight"));
  EXPECT_FALSE(part.params().contains("transformer.h.2.mlp.c_fc.weight"));
  expect_part(part, moments);

  // Rank 0 of 2 with 2 virtual stages holds layers 0 and 2 (virtual stages 0 and 2).
  Gpt2 chunks(kCfg, Device::cpu(), {1, &tp, 0, 2, {}, false, /*virtual_stages=*/2});
  load_any_checkpoint(dir, chunks, &moments);
  EXPECT_TRUE(chunks.params().contains("transformer.h.0.attn.c_attn.weight"));
  EXPECT_TRUE(chunks.params().contains("transformer.h.2.attn.c_attn.weight"));
  EXPECT_FALSE(chunks.params().contains("transformer.h.1.attn.c_attn.weight"));
  expect_part(chunks, moments);
}

// A model part and its moments hold its tensor-parallel cut of the original's.
void ShardedCheckpoint::expect_part(const Gpt2& part, const OptimizerState& moments) const {
  for (const ParameterEntry& e : part.params().entries()) {
    const ParameterEntry& w = model_.params().entry(e.name);
    EXPECT_EQ(values(part.params().param(e)),
              values(parallel::tp_cut(model_.params().param(w), e.split)))
        << e.name;
    EXPECT_EQ(values(moments.exp_avg.carve(e.offset, e.shape)),
              values(parallel::tp_cut(moments_.exp_avg.carve(w.offset, w.shape), e.split)))
        << e.name;
  }
}

TEST_F(ShardedCheckpoint, MissingOrDamagedShardsAreClearErrors) {
  const ShardLayout l{1, 1, 2, 2, {}};
  const std::string dir = (root_ / "dp2").string();
  convert_checkpoint(consolidated_, dir, &l);
  fs::remove(fs::path(dir) / "rank_00001.safetensors");
  try {
    CheckpointReader r(dir);
    FAIL() << "opened a checkpoint without one of its shards";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank_00001.safetensors"), std::string::npos) << e.what();
  }
  const std::string dir2 = (root_ / "dp2b").string();
  convert_checkpoint(consolidated_, dir2, &l);
  fs::resize_file(fs::path(dir2) / "rank_00000.safetensors", 100);
  Gpt2 whole(kCfg);
  EXPECT_THROW(load_any_checkpoint(dir2, whole, nullptr), Error);
  const std::string dir3 = (root_ / "dp2c").string();
  convert_checkpoint(consolidated_, dir3, &l);
  Gpt2 other({4, 4, 64, 96, 16});
  try {
    load_any_checkpoint(dir3, other, nullptr);
    FAIL() << "loaded a checkpoint of another model shape";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d_model=32"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera
