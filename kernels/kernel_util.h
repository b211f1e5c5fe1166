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

// Where an op on `t`'s device runs.
inline Backend backend_of(const Tensor& t) {
  return t.device().is_cpu() ? Backend::cpu : Backend::cuda;
}

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
  return backend_of(first.tensor);
}

// Activations that only 16-bit GEMMs read are stored in the GEMMs' type (train.precision): the
// ops that write or read them take f32, bf16 or f16 there. This checks `t` is defined, of one of
// those types and on `like`'s device.
inline void check_float(const char* op, const char* name, const Tensor& t, const Tensor& like) {
  TS_CHECK(t.defined(), op, ": ", name, " is undefined");
  TS_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16 || t.dtype() == DType::f16, op, ": ",
           name, " must be f32, bf16 or f16, got ", dtype_name(t.dtype()));
  TS_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device().str(), " but the ",
           "other tensors on ", like.device().str(), ": move them to one device");
}

// f.template operator()<T>() with T the element type of a float dtype: float, bf16 or f16.
template <class F>
decltype(auto) visit_float(DType t, F&& f) {
  switch (t) {
    case DType::bf16:
      return f.template operator()<bf16>();
    case DType::f16:
      return f.template operator()<f16>();
    default:
      TS_CHECK(t == DType::f32, "expected f32, bf16 or f16, got ", dtype_name(t));
      return f.template operator()<float>();
  }
}

// An f32 value into an f32, bf16 or f16 element (round to nearest even), and back.
inline void store(float& y, float x) {
  y = x;
}
inline void store(bf16& y, float x) {
  y = to_bf16(x);
}
inline void store(f16& y, float x) {
  y = to_f16(x);
}
inline float load(float x) {
  return x;
}
inline float load(bf16 x) {
  return to_float(x);
}
inline float load(f16 x) {
  return to_float(x);
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
