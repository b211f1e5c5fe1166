// Pipeline parallelism: which layers a stage holds and in which order a stage runs the forward
// and backward passes of a step's micro-batches. Pure functions; the trainer executes the order,
// receiving each micro-batch's input activation from stage s − 1 before its forward and its
// output gradient from stage s + 1 before its backward (p2p over the pp group).
//   GPipe (Huang et al. 2019): every forward, then every backward, in micro-batch order. Holds
//     the activations of all M micro-batches.
//   1F1B (PipeDream-flush, Narayanan et al. 2021; Megatron's default): stage s runs
//     min(P − s − 1, M) warm-up forwards, then alternates one forward and one backward, then
//     drains the remaining backwards. Same bubble as GPipe, at most P − s micro-batches'
//     activations.
// Backwards run in micro-batch order on every schedule, so the last backward of a step is
// micro-batch M − 1's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::parallel {

enum class PipelineSchedule : uint8_t { gpipe, one_f_one_b };

// "gpipe" or "1f1b"; throws Error listing both otherwise.
PipelineSchedule parse_pipeline_schedule(const std::string& name);

struct PipelineStep {
  bool forward;
  int micro_batch;
  bool operator==(const PipelineStep&) const = default;
};

// Stage `stage` of `stages`'s steps for `micro_batches` micro-batches.
std::vector<PipelineStep> pipeline_order(PipelineSchedule schedule, int stage, int stages,
                                         int micro_batches);

// Micro-batches whose activations a stage holds at once under the schedule: the slots to allocate.
int pipeline_slots(PipelineSchedule schedule, int stage, int stages, int micro_batches);

// Layers [first, end) of stage `stage`: `layers_per_stage` when given (one count per stage, summing
// to n_layer), else an even split with the remainder on the first stages. Throws Error when a
// stage would get no layer or the counts do not fit.
struct StageLayers {
  int64_t first = 0, end = 0;
};
StageLayers stage_layers(int64_t n_layer, int stage, int stages,
                         const std::vector<int64_t>& layers_per_stage = {});

}  // namespace tessera::parallel
