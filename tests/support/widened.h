// A helper of the kernel tests that compare 16-bit tensors: needs tessera_kernels (convert).
#pragma once

#include "core/tensor.h"
#include "kernels/convert.h"

namespace tessera::testing {

// x (f32, bf16 or f16, on any device) as an f32 CPU tensor.
inline Tensor widened(const Tensor& x) {
  if (x.dtype() == DType::f32) return x.to(Device::cpu());
  Tensor f = Tensor::empty(x.shape(), DType::f32);
  convert(f, x.to(Device::cpu()));
  return f;
}

}  // namespace tessera::testing
