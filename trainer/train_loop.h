// The training loop: data, model, AdamW with warmup + cosine LR, gradient accumulation and
// clipping, periodic validation, atomic checkpoints with exact resume, and a sample at the end.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/log.h"
#include "trainer/job_config.h"

namespace tessera {

struct TrainSummary {
  int64_t first_step = 0;                            // 0, or the step resumed from
  std::vector<double> train_losses;                  // one per step run in this call
  std::vector<std::pair<int64_t, double>> val_losses;  // (step, loss)
  std::string checkpoint;                            // the last checkpoint written
  double tokens_per_second = 0.0;                    // over the steps of this call
  std::string sample;                                // generated text (when sample.tokens > 0)
};

// Runs `job` to train.steps. Progress goes to `log` (one line per train.log_every steps).
// Throws Error on bad data, a non-finite loss, or a checkpoint that does not fit the config.
TrainSummary run_training(const JobConfig& job, Logger& log);

// Sets the OpenMP and OpenBLAS thread counts (0 leaves the defaults).
void set_compute_threads(int64_t threads);

}  // namespace tessera
