#include "kernels/adamw.h"

#include <cmath>
#include <vector>

#include "kernels/kernel_util.h"

namespace tessera {

void adamw_update(std::vector<AdamWTensors>& sets, const AdamWStep& step) {
  TS_CHECK_GE(step.t, 1, "adamw_update: the step count is 1-based");
  if (sets.empty()) return;
  kernels_detail::Backend backend{};
  for (size_t i = 0; i < sets.size(); ++i) {
    const AdamWTensors& s = sets[i];
    backend = kernels_detail::backend_f32("adamw_update", {{"params", sets.front().params},
                                                           {"params", s.params},
                                                           {"m", s.m},
                                                           {"v", s.v},
                                                           {"grads", s.grads}});
    const int64_t n = s.params.numel();
    TS_CHECK(s.m.numel() == n && s.v.numel() == n && s.grads.numel() == n, "adamw_update: set ", i,
             ": params, m, v and grads must have the same number of elements");
  }
  // Bias corrections in float64 as torch computes them (Python floats): in f32, 1 − β₂ᵗ keeps
  // only a few digits at small t (up to ~1e-5 relative error in the step for β₂ = 0.999).
  const double bc1 = 1.0 - std::pow(double{step.beta1}, static_cast<double>(step.t));
  const double bc2 = 1.0 - std::pow(double{step.beta2}, static_cast<double>(step.t));
  const float step_size = static_cast<float>(step.lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  auto decay = [&](const AdamWTensors& s) {
    return s.decay ? 1.0f - step.lr * step.weight_decay : 1.0f;
  };
  TS_RUN_ON_CUDA(backend, {
    std::vector<cuda::AdamWSet> flat;
    for (AdamWTensors& s : sets)
      flat.push_back({s.params.data<float>(), s.m.data<float>(), s.v.data<float>(),
                      s.grads.data<float>(), s.params.numel(), decay(s)});
    cuda::adamw_update(flat.data(), static_cast<int64_t>(flat.size()), step, step_size, bc2_sqrt,
                       kernels_detail::kOpStream);
  });
  for (AdamWTensors& s : sets) {
    float* p = s.params.data<float>();
    float* pm = s.m.data<float>();
    float* pv = s.v.data<float>();
    const float* g = s.grads.data<float>();
    const float d = decay(s);
    const int64_t n = s.params.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i] * step.grad_scale;
      const float mi = step.beta1 * pm[i] + (1.0f - step.beta1) * gi;
      const float vi = step.beta2 * pv[i] + (1.0f - step.beta2) * gi * gi;
      pm[i] = mi;
      pv[i] = vi;
      // Same algebra as torch: p -= (lr / bc1) · m / (√v / √bc2 + eps).
      p[i] = p[i] * d - step_size * mi / (std::sqrt(vi) / bc2_sqrt + step.eps);
    }
  }
}

namespace {

// Σ g² of one f32 CPU tensor, in float64 over fixed chunks.
double host_norm_squared(const Tensor& grads) {
  const float* g = grads.data<float>();
  const int64_t n = grads.numel();
  const int64_t chunks = std::min<int64_t>(kernels_detail::kReduceChunks, std::max<int64_t>(n, 1));
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    double acc = 0.0;
    for (int64_t i = c * n / chunks; i < (c + 1) * n / chunks; ++i) acc += double(g[i]) * g[i];
    partial[c] = acc;
  }
  double total = 0.0;
  for (double x : partial) total += x;
  return total;
}

}  // namespace

double grad_norm_squared(const std::vector<Tensor>& grads) {
  if (grads.empty()) return 0.0;
  for (const Tensor& g : grads)
    kernels_detail::backend_f32("grad_norm_squared", {{"grads", grads.front()}, {"grads", g}});
#ifdef TESSERA_WITH_CUDA
  if (grads.front().device().is_cuda()) {
    // Every tensor's partials into one buffer, then one copy back (one synchronization).
    const int64_t per = cuda::kNormPartials;
    Tensor partials = Tensor::empty({static_cast<int64_t>(grads.size()) * per * 8}, DType::u8,
                                    grads.front().device());
    std::vector<const float*> pointers;
    std::vector<int64_t> sizes;
    for (const Tensor& g : grads) {
      pointers.push_back(g.data<float>());
      sizes.push_back(g.numel());
    }
    cuda::grad_norm_partials(static_cast<double*>(partials.raw()), pointers.data(), sizes.data(),
                             static_cast<int64_t>(grads.size()), kernels_detail::kOpStream);
    const Tensor host = partials.to(Device::cpu());  // waits for the kernels
    const double* h = static_cast<const double*>(host.raw());
    double total = 0.0;
    for (size_t i = 0; i < grads.size(); ++i) {
      double one = 0.0;
      for (int64_t k = 0; k < per; ++k) one += h[i * per + k];
      total += one;
    }
    return total;
  }
#endif
  double total = 0.0;
  for (const Tensor& g : grads) total += host_norm_squared(g);
  return total;
}

float clip_coefficient(double norm, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  const double coef = max_norm / (norm + 1e-6);
  return coef >= 1.0 ? 1.0f : static_cast<float>(coef);  // a NaN norm stays NaN, like torch
}

}  // namespace tessera
