// The launchers of the AdamW and gradient-norm kernels (kernels/adamw.cuh) declared in
// kernels/adamw.h.
#include "kernels/adamw.cuh"

namespace tessera::cuda {

void adamw_update(const AdamWSet* sets, int64_t count, const AdamWStep& step, float step_size,
                  float bc2_sqrt, CudaStream stream) {
  for (int64_t first = 0; first < count; first += kAdamWSetsPerLaunch) {
    const int n = static_cast<int>(std::min<int64_t>(kAdamWSetsPerLaunch, count - first));
    AdamWBatch batch{};
    for (int s = 0; s < n; ++s) {
      batch.set[s] = sets[first + s];
      batch.start[s + 1] = batch.start[s] + sets[first + s].n;
    }
    if (batch.start[n] == 0) continue;
    adamw_kernel<<<blocks_for(batch.start[n]), kThreads, 0, stream>>>(
        batch, n, step.beta1, step.beta2, step.eps, step.grad_scale, step_size, bc2_sqrt);
    TS_CUDA_CHECK_LAUNCH();
  }
}

void grad_norm_partials(double* partials, const float* const* grads, const int64_t* n,
                        int64_t count, CudaStream stream) {
  for (int64_t first = 0; first < count; first += kAdamWSetsPerLaunch) {
    const int k = static_cast<int>(std::min<int64_t>(kAdamWSetsPerLaunch, count - first));
    NormBatch batch{};
    for (int s = 0; s < k; ++s) {
      batch.grads[s] = grads[first + s];
      batch.n[s] = n[first + s];
    }
    norm_partials_kernel<<<dim3(kNormPartials, k), kThreads, 0, stream>>>(
        partials + first * kNormPartials, batch);
    TS_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace tessera::cuda
