// Sharded checkpoints: every rank writes its own shard, no rank gathers the model. A folder
// step_NNNNNN/ holds rank_RRRRR.safetensors per world rank, index.json with the layout, and the
// usual trainer_state.json, config.json and tokenizer.json.
//
// Rank (tp i, pp s, dp j) stores chunk j (of dp equal chunks) of each of its parameter units —
// the flat fp32 buffers of its tensor-parallel part of stage s (core/parameters.h) — for the
// parameters and both AdamW moments, as "params/<unit>", "exp_avg/<unit>", "exp_avg_sq/<unit>".
// That is exactly a ZeRO-1/2/3 rank's own shard, and 1/world of the state at every stage. The
// index records, for each (tp, pp) part, its units and where each named tensor lies in them, so
// a reader rebuilds any whole tensor from the chunks that hold it (DeepSpeed's universal
// checkpoint, Megatron's dist_checkpointing do the same job) and any layout can load it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "parallel/context.h"
#include "parallel/zero_optimizer.h"
#include "trainer/checkpoint.h"

namespace tessera {

// A parallel layout as a checkpoint records it.
struct ShardLayout {
  int tp = 1, pp = 1, dp = 1, zero = 0;
  std::vector<int64_t> layers_per_stage;  // per virtual stage; empty: even
  int virtual_stages = 1;                 // layer chunks per pp rank (interleaved pipeline)
  // "tp=2 pp=2 dp=2 zero=3" (and " virtual_stages=2" when interleaved).
  std::string str() const;
};

// Writes <root>/step_NNNNNN/ for state.step: this rank's shard from `optimizer`, and on world rank
// 0 the index and metadata; the folder appears complete or not at all. Collective over ctx's
// world; returns the folder on every rank. Throws Error on any I/O failure (the folder stays .tmp).
std::string save_sharded_checkpoint(const std::string& root, const Gpt2& model,
                                    const parallel::DistributedAdamW& optimizer,
                                    parallel::ParallelContext& ctx, const ShardLayout& layout,
                                    const TrainerState& state, const std::string& tokenizer_path,
                                    int64_t keep);

// Whole tensors of a checkpoint of either kind, read one at a time (never the whole model).
class CheckpointReader {
 public:
  // Throws Error naming the file for a missing folder, index, config or shard.
  explicit CheckpointReader(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const Gpt2Config& config() const { return config_; }
  bool sharded() const { return sharded_; }
  // The layout it was saved under (tp = pp = dp = 1 for a consolidated one).
  const ShardLayout& layout() const { return layout_; }
  // The whole tensor `name` (Hugging Face GPT-2 name) of kind "params", "exp_avg" or
  // "exp_avg_sq". Throws Error naming the file when it is missing or of the wrong shape.
  Tensor whole(const std::string& kind, const std::string& name) const;

 private:
  std::string dir_;
  Gpt2Config config_;
  bool sharded_ = false;
  ShardLayout layout_;
  struct Piece {  // where one tp part of a tensor lies in its unit
    int tp = 0, pp = 0;
    std::string unit;
    int64_t unit_numel = 0, offset = 0;
    Shape shape;
    TpSplit split;
  };
  std::map<std::string, std::vector<Piece>> pieces_;  // by tensor name, one per tp rank
  std::map<std::string, std::string> files_;          // "tp,pp,dp" -> shard file
  // The last unit assembled from its shards (kind/tp,pp/unit), reused by its next tensor.
  mutable std::string cached_key_;
  mutable Tensor cached_unit_;
};

// Loads a checkpoint of either kind into this rank's part `local` (its stage's tensors, cut for
// its tp rank) and, when local_moments is non-null, AdamW moments laid out like local's
// ParameterSet. Weights alone (local_moments null) also load from a plain Hugging Face folder
// (config.json and model.safetensors, no trainer_state.json: the state returned is then step 0).
// Throws Error when the checkpoint holds another model shape.
TrainerState load_any_checkpoint(const std::string& dir, Gpt2& local,
                                 OptimizerState* local_moments);

// Offline: writes checkpoint `from` (either kind) as folder `to` in layout `target`, or as one
// consolidated folder (Hugging Face loadable) when target is null. `to` appears complete or not
// at all; an existing `to` is an error.
void convert_checkpoint(const std::string& from, const std::string& to, const ShardLayout* target);

}  // namespace tessera
