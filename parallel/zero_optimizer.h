// DistributedAdamW: AdamW over a ParameterSet with ZeRO (Rajbhandari et al., 2020) sharding over
// the data-parallel group. Rank r of N owns chunk r of every parameter unit:
//   stage 0  plain data parallelism: gradients all-reduced, every rank updates everything
//   stage 1  + optimizer state sharded: gradients reduce-scattered on the last micro-batch, rank r
//            updates its chunk, parameters all-gathered after the step
//   stage 2  + gradients sharded: reduce-scattered after every micro-batch into a chunk-sized
//            accumulator, the full unit gradients freed until the unit's next backward
//   stage 3  + parameters sharded: a unit is all-gathered just before use (acquire), freed after
//            (release), and its neighbour (next in forward, previous in backward) prefetched
// Gradient reduction overlaps the backward pass: the model calls grads_ready(unit) when a unit's
// gradients are final and its reduction starts at once (async); end_micro_batch() waits for the
// rest. Gradients are summed over ranks (the caller scales the loss by 1 / global tokens), so
// every layout computes the same update as one process, up to fp32 summation order.
//
// Per step and rank, model state (bytes, fp32 AdamW: 4 param + 4 grad + 8 moments per element)
// and traffic are those of the ZeRO paper with its mixed-precision 2 + 2 + 12 replaced by
// 4 + 4 + 8: stage 0 16Ψ, 1 8Ψ + 8Ψ/N, 2 4Ψ + 12Ψ/N, 3 16Ψ/N; 2Ψ elements on the wire per step for
// stages 0-2 and 3Ψ for stage 3, times the ring factor (N-1)/N (see zero_accounting.h).
#pragma once

#include <cstdint>
#include <vector>

#include "core/parameters.h"
#include "parallel/communicator.h"

namespace tessera::parallel {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // <= 0 disables
};

// Gradients computed from a loss multiplied by `scale` (fp16 dynamic loss scaling): step() divides
// them by it, and with skip_nonfinite an overflow skips the step instead of throwing.
struct GradScaling {
  double scale = 1.0;
  bool skip_nonfinite = false;
};

// Bytes of model state one rank holds.
struct ModelStateBytes {
  uint64_t params = 0;
  uint64_t grads = 0;
  uint64_t optimizer = 0;
  uint64_t total() const { return params + grads + optimizer; }
};

class DistributedAdamW final : public UnitHooks {
 public:
  // `params` must be allocated with shards = dp.size() (each unit splits evenly) and hold the
  // initial (or loaded) weights on every rank; stage 3 keeps chunk r of each unit and releases the
  // units. params and dp must outlive the optimizer. Throws Error for a stage outside 0-3 or
  // units that do not split into dp.size() chunks.
  // tp, pp: the tensor- and pipeline-parallel groups the model is cut over (null: none), for the
  // global norm (parameters replicated over tp are counted once).
  DistributedAdamW(ParameterSet& params, Communicator& dp, int stage, const AdamWConfig& config,
                   Communicator* tp = nullptr, Communicator* pp = nullptr);

  // Pipeline parallelism ties the first stage's wte unit to the last stage's head unit (one
  // parameter, two copies): after the data-parallel reduction, step() sums `unit`'s gradient
  // chunk over `group` (the embedding group: both copies then take the same update), and counts
  // it in the norm only where counted_in_norm (the first stage).
  void tie_unit(int unit, Communicator& group, bool counted_in_norm);

  // UnitHooks (called by the model; collective over dp at stage 3 and in grads_ready).
  void acquire(int unit, Pass pass) override;
  void release(int unit) override;
  void grads_ready(int unit) override;
  bool keeps_parameters() const override { return stage_ != 3; }

  // Before a micro-batch's backward: stages 0 and 1 reduce gradients only on the step's last one.
  void begin_micro_batch(bool last_of_step);
  // After a micro-batch's backward: waits for its gradient reductions (stages 2 and 3 fold them
  // into the gradient shard and free the unit gradients).
  void end_micro_batch();

  // One AdamW step at `lr` on this rank's chunks with the reduced gradients divided by
  // scaling.scale (global-norm clipping over the whole model: collective over dp, tp, pp and the
  // tied group), then stages 1-2 all-gather the parameters and stage 3 drops every gathered unit.
  // Zeroes the gradients. Returns the global norm of the (unscaled) gradients before clipping. A
  // non-finite norm leaves parameters, moments and the step count untouched: with
  // scaling.skip_nonfinite the norm is returned (every rank sees the same one), otherwise Error.
  double step(double lr, const GradScaling& scaling = {});

  int stage() const { return stage_; }
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  // Model state this rank holds now (after step(): the persistent state the ZeRO formulas count).
  ModelStateBytes state_bytes() const;

  // Full moments in the flat index space of the ParameterSet (total() f32 cpu elements each),
  // all-gathered from the shards. Collective over dp.
  void gather_moments(Tensor& exp_avg, Tensor& exp_avg_sq);
  // Takes this rank's chunks of full moments laid out as gather_moments returns them.
  void load_moments(const Tensor& exp_avg, const Tensor& exp_avg_sq);
  // What a sharded checkpoint stores for this rank: chunk dp.rank() of unit `unit` split
  // dp.size() ways, of the parameters (0), exp_avg (1) or exp_avg_sq (2), as a new cpu tensor.
  // The same chunks on every stage (stage 3 reads its shard, the others their whole copies).
  // Not collective.
  Tensor checkpoint_chunk(int unit, int kind) const;
  // Stage 3: all-gathers every unit and keeps them until release_all_params(), so that the whole
  // model can be read (saving, sampling with the model's hooks unset). No-op below stage 3.
  // Collective over dp.
  void gather_all_params();
  void release_all_params();

 private:
  enum class UnitState : uint8_t { released, gathering, gathered };
  struct Pending {
    int unit;
    CommHandle handle;
  };
  // The part [lo, hi) (offsets in unit u) of one entry that lies in this rank's chunk of u.
  struct Segment {
    int unit;
    const ParameterEntry* entry;
    int64_t lo, hi;
  };

  // This rank's chunk of unit u: offset in the unit, and in the chunk-sized shard buffers.
  int64_t chunk_numel(int u) const;
  int64_t chunk_offset(int u) const { return shard_rank_ * chunk_numel(u); }
  int64_t shard_offset(int u) const;
  Tensor chunk_of(const Tensor& unit_buffer, int u) const;
  Tensor param_chunk(int u) const;
  Tensor grad_chunk(int u) const;
  void start_gather(int u);
  void wait_gathered(int u);
  void drop_gathered_units();
  void wait_pending();

  ParameterSet& params_;
  Communicator& dp_;
  Communicator* tp_;
  Communicator* pp_;
  int tied_unit_ = -1;
  Communicator* tied_group_ = nullptr;
  bool tied_counted_ = true;
  std::vector<Segment> segments_;  // this rank's chunks, entry by entry
  int stage_;
  AdamWConfig config_;
  int shards_;      // N for stages 1-3, 1 for stage 0
  int shard_rank_;  // r for stages 1-3, 0 for stage 0
  int64_t shard_numel_;
  Tensor exp_avg_, exp_avg_sq_;  // shard_numel_ each
  Tensor grad_shard_;            // stages 2-3: reduced gradients of this rank's chunks
  Tensor param_shard_;           // stage 3: this rank's chunks of the parameters (the master copy)
  std::vector<UnitState> unit_state_;
  std::vector<int> in_use_;
  std::vector<CommHandle> gathers_;
  std::vector<Pending> pending_;
  bool reduce_this_micro_batch_ = true;
  bool all_pinned_ = false;
  int64_t t_ = 0;
};

}  // namespace tessera::parallel
