#include "trainer/dataset.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"

namespace tessera {
namespace {

// The shard is written and read with the host's byte order, which must be little-endian.
static_assert(std::endian::native == std::endian::little,
              "token shards assume a little-endian host");

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr size_t kHeaderInts = 256;
constexpr size_t kHeaderBytes = kHeaderInts * sizeof(int32_t);

// A uniform integer in [0, bound) without modulo bias (bound >= 1).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound values are rejected
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

}  // namespace

void write_token_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
  TS_CHECK(tokens.size() <= static_cast<size_t>(INT32_MAX), "shard '", path, "' would hold ",
           tokens.size(), " tokens; the format allows at most ", INT32_MAX, ": split the data");
  int32_t header[kHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TS_CHECK(out, "cannot write token shard '", tmp, "': check that the folder exists and is ",
             "writable");
    out.write(reinterpret_cast<const char*>(header), kHeaderBytes);
    out.write(reinterpret_cast<const char*>(tokens.data()),
              static_cast<std::streamsize>(tokens.size() * sizeof(uint16_t)));
    out.close();
    TS_CHECK(out, "failed writing token shard '", tmp, "' (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  TS_CHECK(!ec, "cannot move '", tmp, "' to '", path, "': ", ec.message());
}

std::vector<uint16_t> read_token_shard(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  TS_CHECK(in, "cannot open token shard '", path, "': prepare the data first (tessera train ",
           "builds it) or fix the path");
  const auto file_bytes = static_cast<size_t>(in.tellg());
  in.seekg(0);
  TS_CHECK(file_bytes >= kHeaderBytes, path, " is not a token shard: it holds ", file_bytes,
           " bytes, less than the ", kHeaderBytes, "-byte header");
  int32_t header[kHeaderInts];
  in.read(reinterpret_cast<char*>(header), kHeaderBytes);
  TS_CHECK(in, "cannot read the header of ", path);
  TS_CHECK(header[0] == kShardMagic, path, " is not a token shard: magic is ", header[0],
           ", expected ", kShardMagic);
  TS_CHECK(header[1] == kShardVersion, path, " has shard version ", header[1],
           "; this build reads version ", kShardVersion, ": rebuild the shards");
  TS_CHECK(header[2] >= 0, path, " is corrupt: header says ", header[2], " tokens");
  const auto count = static_cast<size_t>(header[2]);
  const size_t held = (file_bytes - kHeaderBytes) / sizeof(uint16_t);
  TS_CHECK(held >= count, path, " is truncated: header says ", count, " tokens, file holds ", held);
  TS_CHECK(file_bytes == kHeaderBytes + count * sizeof(uint16_t), path, " is corrupt: header says ",
           count, " tokens but the file has ", file_bytes - kHeaderBytes - count * sizeof(uint16_t),
           " bytes more");
  std::vector<uint16_t> tokens(count);
  in.read(reinterpret_cast<char*>(tokens.data()),
          static_cast<std::streamsize>(count * sizeof(uint16_t)));
  TS_CHECK(in, "cannot read the tokens of ", path);
  return tokens;
}

PrepareResult prepare_dataset(const std::vector<std::string>& documents, const Tokenizer& tok,
                              double val_fraction, const std::string& out_dir) {
  TS_CHECK(tok.vocab_size() <= 65536, "vocab_size ", tok.vocab_size(),
           " does not fit the uint16 token shards: use at most 65536 tokens");
  TS_CHECK(val_fraction > 0.0 && val_fraction <= 0.5, "val_fraction is ", val_fraction,
           ": use a value in (0, 0.5]");
  const auto n = static_cast<int64_t>(documents.size());
  const auto k = static_cast<int64_t>(std::llround(1.0 / val_fraction));
  TS_CHECK(n >= k, "val_fraction ", val_fraction, " holds out every ", k,
           "th document but there are only ", n, ": raise val_fraction or add documents");

  std::vector<std::vector<uint16_t>> encoded(documents.size());
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int32_t> ids = tok.encode(documents[i]);
    encoded[i].assign(ids.begin(), ids.end());
  }

  const auto eot = static_cast<uint16_t>(tok.eot_id());
  std::vector<uint16_t> train, val;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<uint16_t>& split = (i % k == k - 1) ? val : train;
    split.push_back(eot);
    split.insert(split.end(), encoded[i].begin(), encoded[i].end());
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  TS_CHECK(!ec, "cannot create '", out_dir, "': ", ec.message());
  const std::filesystem::path dir = out_dir;
  write_token_shard((dir / "train.bin").string(), train);
  write_token_shard((dir / "val.bin").string(), val);
  return {train.size(), val.size(), static_cast<int>(n)};
}

DataLoader::DataLoader(std::vector<uint16_t> tokens, int64_t batch, int64_t seq_len, uint64_t seed,
                       bool shuffle, int rank, int world)
    : tokens_(std::move(tokens)),
      batch_(batch),
      seq_len_(seq_len),
      seed_(seed),
      shuffle_(shuffle),
      rank_(rank),
      world_(world) {
  TS_CHECK(batch > 0 && seq_len > 0, "batch (", batch, ") and seq_len (", seq_len,
           ") must be positive");
  TS_CHECK(world > 0 && rank >= 0 && rank < world, "rank ", rank, " is outside world ", world);
  const int64_t n = static_cast<int64_t>(tokens_.size());
  const int64_t windows = n > 0 ? (n - 1) / seq_len : 0;
  const std::string ranks = world > 1 ? detail::cat(" per rank on ", world, " ranks") : "";
  TS_CHECK(windows >= batch * world, "the token stream has ", windows, " windows of ", seq_len + 1,
           " tokens but batch is ", batch, ranks,
           ": lower batch size or seq_len, or use more data (for the validation split: raise ",
           "val_fraction)");
  order_.resize(static_cast<size_t>(windows));
  build_order();
}

void DataLoader::build_order() {
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<int64_t>(i);
  if (!shuffle_) return;
  std::mt19937_64 rng(seed_ + epoch_);
  for (size_t i = order_.size(); i > 1; --i) {
    std::swap(order_[i - 1], order_[uniform_below(rng, i)]);
  }
}

void DataLoader::restore(const LoaderState& s) {
  TS_CHECK(s.position < order_.size(), "loader position ", s.position, " is outside an epoch of ",
           order_.size(), " windows: the state comes from other data or sizes");
  epoch_ = s.epoch;
  position_ = s.position;
  build_order();
}

int64_t DataLoader::batches_per_epoch() const {
  return static_cast<int64_t>(order_.size()) / (batch_ * world_);
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets) {
  const int64_t T = seq_len_;
  for (int64_t slot = 0; slot < batch_ * world_; ++slot) {
    const int64_t window = order_[position_];
    if (slot % world_ == rank_) {
      const int64_t row = slot / world_;
      const uint16_t* src = tokens_.data() + window * T;
      for (int64_t t = 0; t < T; ++t) {
        inputs[row * T + t] = src[t];       // (B, T)
        targets[row * T + t] = src[t + 1];  // (B, T)
      }
    }
    if (++position_ == order_.size()) {
      position_ = 0;
      ++epoch_;
      build_order();
    }
  }
}

}  // namespace tessera
