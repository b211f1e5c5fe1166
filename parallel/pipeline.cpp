#include "parallel/pipeline.h"

#include <algorithm>

#include "core/error.h"

namespace tessera::parallel {

PipelineSchedule parse_pipeline_schedule(const std::string& name) {
  if (name == "gpipe") return PipelineSchedule::gpipe;
  if (name == "1f1b") return PipelineSchedule::one_f_one_b;
  TS_THROW("unknown pipeline schedule '", name, "': use 'gpipe' or '1f1b'");
}

std::vector<PipelineStep> pipeline_order(PipelineSchedule schedule, int stage, int stages,
                                         int micro_batches, int chunks) {
  TS_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1 && chunks >= 1,
           "pipeline_order: stage ", stage, " of ", stages, ", ", micro_batches, " micro-batches, ",
           chunks, " chunks");
  std::vector<PipelineStep> order;
  const int m = micro_batches;
  if (schedule == PipelineSchedule::gpipe) {
    TS_CHECK(chunks == 1, "parallel.virtual_stages = ", chunks,
             " needs parallel.schedule '1f1b' (interleaving is a 1F1B schedule)");
    for (int i = 0; i < m; ++i) order.push_back({true, i});
    for (int i = 0; i < m; ++i) order.push_back({false, i});
    return order;
  }
  if (chunks > 1) {
    TS_CHECK(stages > 1, "parallel.virtual_stages = ", chunks, " needs parallel.pp > 1");
    TS_CHECK(m % stages == 0, "interleaved pipeline stages run micro-batches in groups of ",
             "parallel.pp = ", stages, ": make train.grad_accum (", m, ") a multiple of it");
  }
  // The k-th forward (backward) of the rank, k < m·chunks, in Megatron's numbering: groups of
  // `stages` micro-batches, each group through every chunk in turn (backwards last chunk first).
  const int group = stages * chunks, total = m * chunks;
  auto step = [&](int k, bool forward) {
    const int in_group = (k % group) / stages;
    return PipelineStep{forward, (k / group) * stages + k % stages,
                        forward ? in_group : chunks - 1 - in_group};
  };
  const int warmup = chunks == 1 ? std::min(stages - stage - 1, m)
                     : m == stages
                         ? total
                         : std::min((stages - stage - 1) * 2 + (chunks - 1) * stages, total);
  for (int k = 0; k < warmup; ++k) order.push_back(step(k, true));
  for (int k = 0; k < total - warmup; ++k) {
    order.push_back(step(k + warmup, true));
    order.push_back(step(k, false));
  }
  for (int k = total - warmup; k < total; ++k) order.push_back(step(k, false));
  return order;
}

int pipeline_slots(const std::vector<PipelineStep>& order, int chunk) {
  int in_flight = 0, slots = 0;
  for (const PipelineStep& s : order) {
    if (s.chunk != chunk) continue;
    in_flight += s.forward ? 1 : -1;
    slots = std::max(slots, in_flight);
  }
  return slots;
}

StageLayers stage_layers(int64_t n_layer, int stage, int stages,
                         const std::vector<int64_t>& layers_per_stage) {
  TS_CHECK(stages >= 1 && stage >= 0 && stage < stages, "stage_layers: stage ", stage, " of ",
           stages);
  if (!layers_per_stage.empty()) {
    TS_CHECK(static_cast<int>(layers_per_stage.size()) == stages,
             "parallel.layers_per_stage lists ", layers_per_stage.size(),
             " stages but the pipeline has ", stages, " (parallel.pp x parallel.virtual_stages)");
    int64_t sum = 0, first = 0;
    for (int s = 0; s < stages; ++s) {
      TS_CHECK(layers_per_stage[s] >= 1, "parallel.layers_per_stage: stage ", s, " gets ",
               layers_per_stage[s], " layers; every stage needs at least one");
      if (s == stage) first = sum;
      sum += layers_per_stage[s];
    }
    TS_CHECK(sum == n_layer, "parallel.layers_per_stage sums to ", sum, " but model.n_layer is ",
             n_layer);
    return {first, first + layers_per_stage[stage]};
  }
  TS_CHECK(n_layer >= stages, "model.n_layer (", n_layer,
           ") must be at least the number of pipeline stages (", stages,
           " = parallel.pp x parallel.virtual_stages): every stage needs a layer");
  const int64_t base = n_layer / stages, extra = n_layer % stages;
  const int64_t first = stage * base + std::min<int64_t>(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0)};
}

}  // namespace tessera::parallel
