// Token shards on disk and the deterministic loader that cuts them into training batches.
//
// Shard format (llm.c's): a header of 256 little-endian int32 — [0] = 20240520 (magic),
// [1] = 1 (version), [2] = number of tokens, the rest 0 — then the tokens as little-endian uint16.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/tokenizer.h"

namespace tessera {

// Writes `tokens` as a shard, atomically (path.tmp, then rename). Throws Error naming the file
// when it cannot be written.
void write_token_shard(const std::string& path, const std::vector<uint16_t>& tokens);

// Reads a shard. Throws Error naming the file when it is missing, has a wrong magic or version,
// or is shorter or longer than its header says.
std::vector<uint16_t> read_token_shard(const std::string& path);

struct PrepareResult {
  size_t train_tokens = 0;
  size_t val_tokens = 0;
  int num_documents = 0;
};

// Tokenizes the documents (in parallel, output in document order), puts <|endoftext|> before
// each one, sends every k-th document (k = round(1 / val_fraction); documents k-1, 2k-1, ...) to
// validation so that the held-out split samples the whole corpus, and writes out_dir/train.bin
// and out_dir/val.bin (creating out_dir). Throws Error when the vocabulary does not fit uint16,
// val_fraction is outside (0, 0.5], or a split would be empty.
PrepareResult prepare_dataset(const std::vector<std::string>& documents, const Tokenizer& tok,
                              double val_fraction, const std::string& out_dir);

// Where a DataLoader stands: windows drawn so far in epoch `epoch`.
struct LoaderState {
  uint64_t epoch = 0;
  uint64_t position = 0;
};

// Cuts a token stream into windows of seq_len + 1 tokens starting at multiples of seq_len
// (window i covers tokens [i*T, i*T + T]; targets are the inputs shifted by one), so there are
// (n - 1) / T windows. Each epoch visits every window once, in an order drawn by a Fisher-Yates
// shuffle from std::mt19937_64(seed + epoch) (or in order when shuffle is false); batches run on
// across epoch boundaries. Data parallelism: every batch draws batch * world windows from that
// order and rank r fills its rows from slots r, r + world, r + 2 * world, ..., so the ranks of one
// step see disjoint windows. Not thread-safe; one loader per rank.
class DataLoader {
 public:
  // Throws Error when batch, seq_len or world is not positive, rank is outside [0, world), or
  // the stream holds fewer than batch * world windows.
  DataLoader(std::vector<uint16_t> tokens, int64_t batch, int64_t seq_len, uint64_t seed,
             bool shuffle, int rank = 0, int world = 1);

  // Fills inputs and targets, each (B, T) row-major, with the next batch.
  void next_batch(int32_t* inputs, int32_t* targets);

  // The position after the batches drawn so far; restore() of it continues with exactly the
  // batches this loader would draw next.
  LoaderState state() const { return {epoch_, position_}; }
  // Continues from a state() of a loader over the same tokens, sizes, seed and world. Throws
  // Error when the position lies outside the epoch.
  void restore(const LoaderState& s);
  // Back to the first batch of epoch 0.
  void reset() { restore({}); }

  // Full batches in one epoch (windows / (batch * world), rounded down).
  int64_t batches_per_epoch() const;
  int64_t num_windows() const { return static_cast<int64_t>(order_.size()); }

 private:
  // Sets order_ to epoch_'s visiting order.
  void build_order();

  std::vector<uint16_t> tokens_;
  int64_t batch_, seq_len_;
  uint64_t seed_;
  bool shuffle_;
  int rank_, world_;
  uint64_t epoch_ = 0;
  uint64_t position_ = 0;       // windows of order_ drawn so far in epoch_
  std::vector<int64_t> order_;  // window indices in visiting order
};

}  // namespace tessera
