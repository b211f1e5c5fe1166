// Learning-rate schedule: linear warmup from 0, then cosine decay to min_lr (GPT-2 / nanoGPT).
#pragma once

#include <cstdint>

namespace tessera {

struct LrSchedule {
  double lr;
  double min_lr;
  int64_t warmup_steps;
  int64_t total_steps;

  // The rate for 0-based `step`: lr·(step+1)/warmup during warmup, then
  // min_lr + ½(lr − min_lr)(1 + cos(π·progress)) with progress from 0 to 1 at the last step.
  double at(int64_t step) const;
};

}  // namespace tessera
