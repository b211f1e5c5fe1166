#include "trainer/loss_scaler.h"

#include "core/error.h"

namespace tessera {

LossScaler::LossScaler(bool enabled, LossScaleState state, int64_t growth_interval)
    : enabled_(enabled), state_(state), growth_interval_(growth_interval) {
  TS_CHECK(state_.scale > 0.0 && growth_interval_ > 0, "loss scale ", state_.scale,
           " and growth interval ", growth_interval_, " must be positive");
}

bool LossScaler::update(bool finite) {
  if (!enabled_) return true;
  if (!finite) {
    state_.scale *= 0.5;
    state_.good_steps = 0;
    ++skipped_;
    return false;
  }
  if (++state_.good_steps == growth_interval_) {
    state_.scale *= 2.0;
    state_.good_steps = 0;
  }
  return true;
}

}  // namespace tessera
