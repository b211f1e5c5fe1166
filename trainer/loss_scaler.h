// Dynamic loss scaling for fp16 GEMMs (train.precision: fp16), as torch.cuda.amp.GradScaler does
// it: the loss's gradient is multiplied by scale() so that small gradients survive fp16's range;
// a step whose gradients overflowed (a non-finite norm) is skipped and the scale halved; after
// `growth_interval` finite steps in a row the scale doubles.
#pragma once

#include <cstdint>

namespace tessera {

// The part of a LossScaler a checkpoint keeps, so a resumed run scales as the first one would.
struct LossScaleState {
  double scale = 65536.0;  // 2^16, GradScaler's default
  int64_t good_steps = 0;  // finite steps since the scale last changed
};

class LossScaler {
 public:
  // Disabled: scale() is 1 and every step counts as applied.
  explicit LossScaler(bool enabled, LossScaleState state = {}, int64_t growth_interval = 2000);

  bool enabled() const { return enabled_; }
  double scale() const { return enabled_ ? state_.scale : 1.0; }
  const LossScaleState& state() const { return state_; }
  int64_t skipped_steps() const { return skipped_; }

  // Records whether a step's gradients were finite and adjusts the scale. Returns whether the
  // step's update was applied (always, when disabled).
  bool update(bool finite);

 private:
  bool enabled_;
  LossScaleState state_;
  int64_t growth_interval_;
  int64_t skipped_ = 0;
};

}  // namespace tessera
