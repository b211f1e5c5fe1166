// Optimizer kernels: fused AdamW with decoupled weight decay, and the global gradient norm.
// Updates run in place over flat fp32 buffers (master weights and optimizer state are fp32).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tessera {

struct AdamWStep {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;  // decoupled: p -= lr · weight_decay · p
  int64_t t;           // 1-based step count, for bias correction
  float grad_scale;    // multiplies every gradient first (clipping coefficient, 1/loss-scale)
};

// One tensor's share of an AdamW step: flat f32 views of one length. `decay` says whether
// step.weight_decay applies (weights) or not (biases, layernorm parameters).
struct AdamWTensors {
  Tensor params, m, v, grads;
  bool decay = true;
};

// One torch.optim.AdamW step on every element of every set (fused and multi-tensor: on CUDA one
// launch per cuda::kAdamWSetsPerLaunch sets): g = grad_scale·grads; p -= lr·wd·p;
// m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; p -= lr·m̂ / (√v̂ + eps). params, m, v updated in
// place. All sets on one device; throws Error naming the set that is not, or whose lengths differ.
void adamw_update(std::vector<AdamWTensors>& sets, const AdamWStep& step);

// Σ g² over all elements of every tensor (one device), accumulated in float64 in fixed chunks per
// tensor and summed in order (deterministic for any threads); one synchronization on CUDA.
double grad_norm_squared(const std::vector<Tensor>& grads);

// The clip_grad_norm_ coefficient: min(1, max_norm / (norm + 1e-6)); max_norm <= 0 disables.
float clip_coefficient(double norm, float max_norm);

namespace cuda {  // launchers on device pointers (kernels/adamw.cu)
// One set of adamw_update: n elements each; decay = 1 − lr·wd, or 1 without weight decay.
struct AdamWSet {
  float* params;
  float* m;
  float* v;
  const float* grads;
  int64_t n;
  float decay;
};
// Sets per launch: their pointers travel as kernel parameters (no upload, no synchronization).
constexpr int kAdamWSetsPerLaunch = 48;
// adamw_update's element loop over sets[0, count); step_size = lr / (1 − β1ᵗ) and
// bc2_sqrt = √(1 − β2ᵗ) come from the host in float64.
void adamw_update(const AdamWSet* sets, int64_t count, const AdamWStep& step, float step_size,
                  float bc2_sqrt, CudaStream stream);
// partials (count, kNormPartials) f64: row i = Σ g² over fixed shares of grads[i] (n[i] elements);
// a row's sum, in order, is that tensor's squared norm. kAdamWSetsPerLaunch tensors a launch.
constexpr int kNormPartials = 256;
void grad_norm_partials(double* partials, const float* const* grads, const int64_t* n,
                        int64_t count, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
