// Token shards (format, round trip, corruption errors), the loader's windows, epochs, shuffling,
// ranks and resume, and prepare_dataset's document split and <|endoftext|> placement.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "tests/support/numeric.h"
#include "trainer/dataset.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// A fresh, empty folder for one test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path(::testing::TempDir()) /
            (std::string("tessera_data_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// The Error message of read_token_shard(path), "" when it succeeds.
std::string shard_error(const std::string& path) {
  try {
    read_token_shard(path);
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

// Tokens 0, 1, 2, ...: a window's first input token divided by T is its index.
std::vector<uint16_t> iota_tokens(size_t n) {
  std::vector<uint16_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint16_t>(i);
  return t;
}

struct Batch {
  std::vector<int32_t> inputs, targets;
};

Batch draw(DataLoader& loader, int64_t B, int64_t T) {
  Batch b{std::vector<int32_t>(B * T, -1), std::vector<int32_t>(B * T, -1)};  // poisoned
  loader.next_batch(b.inputs.data(), b.targets.data());
  return b;
}

// Window indices of the rows of `count` batches (tokens from iota_tokens).
std::vector<int64_t> draw_windows(DataLoader& loader, int64_t B, int64_t T, int64_t count) {
  std::vector<int64_t> windows;
  for (int64_t i = 0; i < count; ++i) {
    const Batch b = draw(loader, B, T);
    for (int64_t r = 0; r < B; ++r) windows.push_back(b.inputs[r * T] / T);
  }
  return windows;
}

// ---- Shards --------------------------------------------------------------------------------

TEST(TokenShard, RoundTripsWithLlmcHeader) {
  TempDir dir;
  std::mt19937_64 rng(testing::test_seed());
  std::vector<uint16_t> tokens(1000);
  for (uint16_t& t : tokens) t = static_cast<uint16_t>(rng());
  tokens[0] = 0;
  tokens[1] = 65535;
  const std::string path = dir.file("train.bin");
  write_token_shard(path, tokens);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 1024 + 2 * tokens.size());
  int32_t header[256];
  std::memcpy(header, bytes.data(), sizeof(header));
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 1000);
  for (int i = 3; i < 256; ++i) ASSERT_EQ(header[i], 0) << i;
  EXPECT_EQ(static_cast<uint8_t>(bytes[1024 + 2]), 0xFF);  // little-endian 65535

  EXPECT_EQ(read_token_shard(path), tokens);
  write_token_shard(path, {});
  EXPECT_TRUE(read_token_shard(path).empty());
}

TEST(TokenShard, CorruptFilesNameTheFileAndTheProblem) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  write_token_shard(path, std::vector<uint16_t>(1000, 7));
  const std::string good = read_bytes(path);

  write_bytes(path, good.substr(0, 1024 + 2 * 900));
  EXPECT_EQ(shard_error(path), path + " is truncated: header says 1000 tokens, file holds 900");

  write_bytes(path, good + "xx");
  EXPECT_NE(shard_error(path).find(path + " is corrupt"), std::string::npos);

  std::string bad_magic = good;
  bad_magic[0] = 1;
  write_bytes(path, bad_magic);
  EXPECT_NE(shard_error(path).find(path + " is not a token shard: magic"), std::string::npos);

  std::string bad_version = good;
  bad_version[4] = 2;
  write_bytes(path, bad_version);
  EXPECT_NE(shard_error(path).find(path + " has shard version 2"), std::string::npos);

  write_bytes(path, good.substr(0, 100));
  EXPECT_NE(shard_error(path).find("less than the 1024-byte header"), std::string::npos);

  const std::string missing = dir.file("missing.bin");
  EXPECT_NE(shard_error(missing).find("cannot open token shard '" + missing + "'"),
            std::string::npos);
  EXPECT_THROW(write_token_shard(dir.file("no/such/dir/x.bin"), {1, 2}), Error);
}

// ---- DataLoader ----------------------------------------------------------------------------

TEST(DataLoader, WindowsOverlapByOneAndTargetsAreShiftedInputs) {
  const int64_t B = 3, T = 8;
  // 8 * 5 + 1 tokens: exactly 5 windows; one token fewer leaves 4.
  EXPECT_EQ(DataLoader(iota_tokens(41), B, T, 1, false).num_windows(), 5);
  EXPECT_EQ(DataLoader(iota_tokens(40), B, T, 1, false).num_windows(), 4);

  DataLoader loader(iota_tokens(41), B, T, 1, /*shuffle=*/false);
  EXPECT_EQ(loader.batches_per_epoch(), 1);
  const Batch b = draw(loader, B, T);
  for (int64_t r = 0; r < B; ++r) {
    for (int64_t t = 0; t < T; ++t) {
      ASSERT_EQ(b.inputs[r * T + t], r * T + t);  // window r covers tokens [r*T, r*T + T]
      ASSERT_EQ(b.targets[r * T + t], r * T + t + 1);
    }
  }
  // Unshuffled: windows 3, 4, then the next epoch starts again at window 0.
  EXPECT_EQ(draw_windows(loader, B, T, 1), (std::vector<int64_t>{3, 4, 0}));
  EXPECT_EQ(loader.state().epoch, 1u);
  EXPECT_EQ(loader.state().position, 1u);
}

TEST(DataLoader, EveryWindowOncePerEpochInAFreshOrder) {
  const int64_t B = 4, T = 8, windows = 37;  // batches straddle epoch boundaries
  DataLoader loader(iota_tokens(windows * T + 1), B, T, testing::test_seed(), true);
  EXPECT_EQ(loader.batches_per_epoch(), 9);
  const std::vector<int64_t> seen = draw_windows(loader, B, T, 3 * windows / B + 1);
  std::vector<std::vector<int64_t>> epochs;
  for (int64_t e = 0; e < 3; ++e) {
    std::vector<int64_t> order(seen.begin() + e * windows, seen.begin() + (e + 1) * windows);
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t w = 0; w < windows; ++w) ASSERT_EQ(sorted[w], w) << "epoch " << e;
    epochs.push_back(order);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
}

TEST(DataLoader, SameSeedSameBatchesOtherSeedOthers) {
  const int64_t B = 2, T = 16;
  const std::vector<uint16_t> tokens = iota_tokens(T * 50 + 1);
  DataLoader a(tokens, B, T, 42, true), b(tokens, B, T, 42, true), c(tokens, B, T, 43, true);
  const std::vector<int64_t> wa = draw_windows(a, B, T, 60);
  EXPECT_EQ(wa, draw_windows(b, B, T, 60));
  EXPECT_NE(wa, draw_windows(c, B, T, 60));
}

TEST(DataLoader, RestoreContinuesWithTheSameBatches) {
  const int64_t B = 3, T = 4;
  const std::vector<uint16_t> tokens = iota_tokens(T * 20 + 3);  // 20 windows
  DataLoader original(tokens, B, T, 7, true);
  std::vector<Batch> first;
  for (int i = 0; i < 11; ++i) first.push_back(draw(original, B, T));  // into epoch 1
  const LoaderState saved = original.state();
  EXPECT_EQ(saved.epoch, 1u);
  std::vector<Batch> next;
  for (int i = 0; i < 15; ++i) next.push_back(draw(original, B, T));  // across epoch 2

  DataLoader resumed(tokens, B, T, 7, true);
  resumed.restore(saved);
  for (int i = 0; i < 15; ++i) {
    const Batch b = draw(resumed, B, T);
    ASSERT_EQ(b.inputs, next[i].inputs) << "batch " << i;
    ASSERT_EQ(b.targets, next[i].targets) << "batch " << i;
  }
  resumed.reset();
  EXPECT_EQ(draw(resumed, B, T).inputs, first[0].inputs);
  EXPECT_THROW(resumed.restore({0, 20}), Error);
}

TEST(DataLoader, RanksTakeInterleavedRowsOfOneGlobalBatch) {
  const int64_t B = 2, T = 8, world = 3;
  const std::vector<uint16_t> tokens = iota_tokens(T * 40 + 1);
  DataLoader global(tokens, B * world, T, 5, true);
  std::vector<DataLoader> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back(tokens, B, T, 5, true, r, world);
  EXPECT_EQ(ranks[0].batches_per_epoch(), global.batches_per_epoch());
  for (int step = 0; step < 10; ++step) {
    const Batch g = draw(global, B * world, T);
    for (int r = 0; r < world; ++r) {
      const Batch b = draw(ranks[r], B, T);
      for (int64_t row = 0; row < B; ++row) {
        const int64_t slot = row * world + r;
        ASSERT_TRUE(std::equal(b.inputs.begin() + row * T, b.inputs.begin() + (row + 1) * T,
                               g.inputs.begin() + slot * T));
      }
    }
  }
  EXPECT_THROW(DataLoader(tokens, B, T, 5, true, 3, 3), Error);
}

TEST(DataLoader, TooFewWindowsSaysWhatToChange) {
  try {
    DataLoader(iota_tokens(3 * 256 + 1), 8, 256, 1, false);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("has 3 windows of 257 tokens but batch is 8: lower batch size or "
                               "seq_len"),
              std::string::npos)
        << e.message();
  }
  EXPECT_THROW(DataLoader({}, 1, 4, 1, false), Error);
  EXPECT_THROW(DataLoader(iota_tokens(100), 0, 4, 1, false), Error);
}

// ---- prepare_dataset -----------------------------------------------------------------------

TEST(PrepareDataset, SplitsDocumentsAndDelimitsThemWithEndOfText) {
  TempDir dir;
  const std::vector<std::string> docs = {
      "The jury said it did find that many of Georgia's registration laws are outmoded.",
      "It recommended that Fulton legislators act \"to have these laws studied\".",
      "The grand jury commented on a number of other topics.\nMerger proposed",
      "However, the jury said it believes these two offices should be combined.",
      "Implementation of Georgia's automobile title law was also recommended.",
      "It urged that the next Legislature provide enabling funds -- 1961, 1962.",
      "Café, naïve, 日本語: the jury's \xff raw byte."};
  const Tokenizer tok = Tokenizer::train(docs, 400);
  const PrepareResult r = prepare_dataset(docs, tok, 1.0 / 3.0, dir.file("out"));
  EXPECT_EQ(r.num_documents, 7);

  const std::vector<uint16_t> train = read_token_shard(dir.file("out/train.bin"));
  const std::vector<uint16_t> val = read_token_shard(dir.file("out/val.bin"));
  EXPECT_EQ(r.train_tokens, train.size());
  EXPECT_EQ(r.val_tokens, val.size());
  // Every third document (2 and 5) is held out; each document follows an <|endoftext|>.
  const std::string eot(Tokenizer::kEndOfText);
  const auto decode = [&](const std::vector<uint16_t>& t) {
    return tok.decode(std::vector<int32_t>(t.begin(), t.end()));
  };
  EXPECT_EQ(decode(train),
            eot + docs[0] + eot + docs[1] + eot + docs[3] + eot + docs[4] + eot + docs[6]);
  EXPECT_EQ(decode(val), eot + docs[2] + eot + docs[5]);
  ASSERT_FALSE(train.empty());
  EXPECT_EQ(train[0], tok.eot_id());
  EXPECT_EQ(std::count(train.begin(), train.end(), tok.eot_id()), 5);
  EXPECT_EQ(std::count(val.begin(), val.end(), tok.eot_id()), 2);
  // The tokens between delimiters are the documents' own encodings.
  std::vector<uint16_t> expected_val = {static_cast<uint16_t>(tok.eot_id())};
  for (int32_t id : tok.encode(docs[2])) expected_val.push_back(static_cast<uint16_t>(id));
  expected_val.push_back(static_cast<uint16_t>(tok.eot_id()));
  for (int32_t id : tok.encode(docs[5])) expected_val.push_back(static_cast<uint16_t>(id));
  EXPECT_EQ(val, expected_val);

  EXPECT_THROW(prepare_dataset(docs, tok, 0.0, dir.file("bad")), Error);
  EXPECT_THROW(prepare_dataset(docs, tok, 0.9, dir.file("bad")), Error);
  EXPECT_THROW(prepare_dataset(docs, tok, 0.1, dir.file("bad")), Error);  // k = 10 > 7 docs
}

}  // namespace
}  // namespace tessera
