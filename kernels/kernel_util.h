// Shared helpers for the kernel launchers: the device dispatch point and f32 checks.
#pragma once

#include <initializer_list>

#include "core/tensor.h"

namespace tessera::kernels_detail {

// Throws Error unless `t` is an f32 CPU tensor; `op` and `name` go into the message. The CUDA
// backend replaces this check with a dispatch once its launchers exist.
inline void require_cpu_f32(const char* op, const char* name, const Tensor& t) {
  TS_CHECK(t.defined(), op, ": ", name, " is undefined");
  TS_CHECK(t.device().is_cpu(), op, " on ", t.device().str(),
           " is not built yet (CUDA backend): move ", name, " to cpu");
  TS_CHECK(t.dtype() == DType::f32, op, ": ", name, " must be f32, got ", dtype_name(t.dtype()));
}

struct Named {
  const char* name;
  const Tensor& tensor;
};

// require_cpu_f32 for each named tensor.
inline void require_cpu_f32(const char* op, std::initializer_list<Named> tensors) {
  for (const Named& t : tensors) require_cpu_f32(op, t.name, t.tensor);
}

// Fixed row-chunking for deterministic reductions: the chunk count does not depend on the
// number of threads, so results are bit-identical for any OMP_NUM_THREADS.
constexpr int64_t kReduceChunks = 64;

}  // namespace tessera::kernels_detail
