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
                                         int micro_batches) {
  TS_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1,
           "pipeline_order: stage ", stage, " of ", stages, ", ", micro_batches, " micro-batches");
  std::vector<PipelineStep> order;
  const int m = micro_batches;
  if (schedule == PipelineSchedule::gpipe) {
    for (int i = 0; i < m; ++i) order.push_back({true, i});
    for (int i = 0; i < m; ++i) order.push_back({false, i});
    return order;
  }
  const int warmup = std::min(stages - stage - 1, m);
  int next_forward = 0, next_backward = 0;
  for (; next_forward < warmup; ++next_forward) order.push_back({true, next_forward});
  while (next_forward < m) {
    order.push_back({true, next_forward++});
    order.push_back({false, next_backward++});
  }
  while (next_backward < m) order.push_back({false, next_backward++});
  return order;
}

int pipeline_slots(PipelineSchedule schedule, int stage, int stages, int micro_batches) {
  if (schedule == PipelineSchedule::gpipe) return micro_batches;
  return std::min(stages - stage, micro_batches);
}

StageLayers stage_layers(int64_t n_layer, int stage, int stages,
                         const std::vector<int64_t>& layers_per_stage) {
  TS_CHECK(stages >= 1 && stage >= 0 && stage < stages, "stage_layers: stage ", stage, " of ",
           stages);
  if (!layers_per_stage.empty()) {
    TS_CHECK(static_cast<int>(layers_per_stage.size()) == stages,
             "parallel.layers_per_stage lists ", layers_per_stage.size(),
             " stages but parallel.pp is ", stages);
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
  TS_CHECK(n_layer >= stages, "model.n_layer (", n_layer, ") must be at least parallel.pp (",
           stages, "): every pipeline stage needs a layer");
  const int64_t base = n_layer / stages, extra = n_layer % stages;
  const int64_t first = stage * base + std::min<int64_t>(stage, extra);
  return {first, first + base + (stage < extra ? 1 : 0)};
}

}  // namespace tessera::parallel
