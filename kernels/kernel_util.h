// Shared helpers for the kernel launchers: the device dispatch point and f32 checks.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/tensor.h"

namespace tessera::kernels_detail {

// The stream Tensor-level ops launch their CUDA kernels on: the default stream, which the NCCL
// communicator's compute stream also defaults to. The launchers themselves take any stream.
inline constexpr CudaStream kOpStream = nullptr;

struct Named {
  const char* name;
  const Tensor& tensor;
};

enum class Backend : uint8_t { cpu, cuda };

// Every tensor defined, f32 and on the first one's device.
// Returns where the op runs; throws Error naming the tensor that is not.
inline Backend backend_f32(const char* op, std::initializer_list<Named> tensors) {
  const Named& first = *tensors.begin();
  for (const Named& t : tensors) {
    TS_CHECK(t.tensor.defined(), op, ": ", t.name, " is undefined");
    TS_CHECK(t.tensor.dtype() == DType::f32, op, ": ", t.name, " must be f32, got ",
             dtype_name(t.tensor.dtype()));
    TS_CHECK(t.tensor.device() == first.tensor.device(), op, ": ", t.name, " is on ",
             t.tensor.device().str(), " but ", first.name, " on ", first.tensor.device().str(),
             ": move them to one device");
  }
  return first.tensor.device().is_cpu() ? Backend::cpu : Backend::cuda;
}

// Fixed row-chunking for deterministic reductions: the chunk count does not depend on the
// number of threads, so results are bit-identical for any OMP_NUM_THREADS.
constexpr int64_t kReduceChunks = 64;

}  // namespace tessera::kernels_detail

// `if (backend is cuda) { call; return; }` in a CUDA build; nothing without CUDA, where no tensor
// can be on a CUDA device.
#ifdef TESSERA_WITH_CUDA
#define TS_RUN_ON_CUDA(backend, ...)                           \
  if ((backend) == ::tessera::kernels_detail::Backend::cuda) { \
    __VA_ARGS__;                                               \
    return;                                                    \
  }
#else
#define TS_RUN_ON_CUDA(backend, ...) (void)(backend)
#endif
