// AdamW over a ParameterSet: fp32 moments laid out like the flat parameter buffer, decay only on
// the entries marked for it, global-norm clipping folded into the update (no extra pass).
#pragma once

#include "core/parameters.h"
#include "kernels/adamw.h"

namespace tessera {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // <= 0 disables
};

class AdamW {
 public:
  AdamW(const ParameterSet& params, const AdamWConfig& config);

  // One step at learning rate lr using the accumulated gradients; returns the gradient norm
  // before clipping. Throws Error on a non-finite norm (and leaves parameters untouched).
  double step(ParameterSet& params, double lr);

  int64_t steps_taken() const { return t_; }
  // Moments as views, one per parameter entry (for checkpoints).
  Tensor exp_avg(const ParameterEntry& e) const { return m_.carve(e.offset, e.shape); }
  Tensor exp_avg_sq(const ParameterEntry& e) const { return v_.carve(e.offset, e.shape); }
  // Restores the step count after loading moments into exp_avg/exp_avg_sq.
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  AdamWConfig config_;
  Tensor m_, v_;  // flat, same layout as the parameter buffer
  int64_t t_ = 0;
};

}  // namespace tessera
