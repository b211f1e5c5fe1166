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
//   Interleaved 1F1B (Narayanan et al. 2021, section 2.2; Megatron's virtual pipeline): each rank
//     holds v chunks of layers, chunk k of rank s being virtual stage k·P + s of v·P, so a
//     micro-batch visits every rank v times. Forwards run in groups of P micro-batches, chunk by
//     chunk (backwards likewise, last chunk first); rank s warms up with (P − s − 1)·2 + (v − 1)·P
//     forwards (all of them when M = P). The bubble shrinks v-fold for v-fold more p2p messages;
//     M must be a multiple of P.
// Backwards of one chunk run in micro-batch order on every schedule, so the last backward of a
// chunk's layers in a step is micro-batch M − 1's.
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
  int chunk = 0;  // which of the rank's layer chunks (virtual stages); 0 without interleaving
  bool operator==(const PipelineStep&) const = default;
};

// Stage `stage` of `stages`'s steps for `micro_batches` micro-batches, each stage holding
// `chunks` layer chunks (> 1: interleaved 1F1B). Throws Error naming the config key when chunks > 1
// comes with GPipe, one stage, or micro-batches that are not a multiple of the stages.
std::vector<PipelineStep> pipeline_order(PipelineSchedule schedule, int stage, int stages,
                                         int micro_batches, int chunks = 1);

// Micro-batches of `chunk` whose activations `order` holds at once (forwarded, not yet
// backwarded): the slots to allocate. A chunk's micro-batches in flight are always consecutive,
// so micro-batch m can use slot m % slots.
int pipeline_slots(const std::vector<PipelineStep>& order, int chunk = 0);

// Layers [first, end) of stage `stage`: `layers_per_stage` when given (one count per stage, summing
// to n_layer), else an even split with the remainder on the first stages. With interleaving,
// `stage` and `stages` count virtual stages (k·P + s of v·P). Throws Error when a stage would get
// no layer or the counts do not fit.
struct StageLayers {
  int64_t first = 0, end = 0;
};
StageLayers stage_layers(int64_t n_layer, int stage, int stages,
                         const std::vector<int64_t>& layers_per_stage = {});

}  // namespace tessera::parallel
