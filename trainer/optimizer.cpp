#include "trainer/optimizer.h"

#include <cmath>

namespace tessera {

AdamW::AdamW(const ParameterSet& params, const AdamWConfig& config)
    : config_(config),
      m_(Tensor::zeros(params.flat_params().shape(), DType::f32, params.flat_params().device())),
      v_(Tensor::zeros(params.flat_params().shape(), DType::f32, params.flat_params().device())) {}

double AdamW::step(ParameterSet& params, double lr) {
  const double norm = std::sqrt(grad_norm_squared(params.flat_grads()));
  TS_CHECK(std::isfinite(norm), "gradient norm is ", norm, " at step ", t_ + 1,
           ": lower train.lr, or raise train.warmup_steps");
  ++t_;
  AdamWStep s{static_cast<float>(lr),
              static_cast<float>(config_.beta1),
              static_cast<float>(config_.beta2),
              static_cast<float>(config_.eps),
              0.0f,
              t_,
              clip_coefficient(norm, static_cast<float>(config_.grad_clip))};
  for (const ParameterEntry& e : params.entries()) {
    s.weight_decay = e.weight_decay ? static_cast<float>(config_.weight_decay) : 0.0f;
    Tensor p = params.param(e), m = exp_avg(e), v = exp_avg_sq(e);
    adamw_update(p, m, v, params.grad(e), s);
  }
  return norm;
}

}  // namespace tessera
