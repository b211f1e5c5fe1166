// The training loop: data, model, AdamW with warmup + cosine LR, gradient accumulation and
// clipping, periodic validation, atomic checkpoints with exact resume, and a sample at the end.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/log.h"
#include "parallel/context.h"
#include "parallel/zero_optimizer.h"
#include "trainer/job_config.h"

namespace tessera {

struct TrainSummary {
  int64_t first_step = 0;                              // 0, or the step resumed from
  std::vector<double> train_losses;                    // one per step run in this call
  std::vector<std::pair<int64_t, double>> val_losses;  // (step, loss)
  std::string checkpoint;                              // the last checkpoint written (rank 0)
  double tokens_per_second = 0.0;                      // over the steps of this call
  std::string sample;                                  // generated text (rank 0, sample.tokens > 0)
  parallel::ModelStateBytes state_bytes;  // model state this rank held after the last step
  parallel::CommStats step_traffic;       // this rank's data-parallel traffic, last step
};

// Runs `job` to train.steps on this rank of `ctx` (collective over ctx's world: every rank calls
// it with the same job). Rank r of the data-parallel group trains on its train.batch_size / dp
// rows of each micro-batch; the losses, gradients and updates are those of one process with the
// whole batch, up to fp32 summation order. Progress goes to `log` (one line per
// train.log_every steps); world rank 0 writes checkpoints and draws the sample. Throws Error on
// bad data, a non-finite loss, a batch that does not split over dp, or a checkpoint that does
// not fit the config.
TrainSummary run_training(const JobConfig& job, Logger& log, parallel::ParallelContext& ctx);
// The same in one process (no MPI).
TrainSummary run_training(const JobConfig& job, Logger& log);

// Sets the OpenMP and OpenBLAS thread counts (0 leaves the defaults).
void set_compute_threads(int64_t threads);

}  // namespace tessera
