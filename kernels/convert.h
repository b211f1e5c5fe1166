// Element type conversion between f32 and the 16-bit floats: the operands of bf16 and fp16 GEMMs
// (train.precision). Round-to-nearest-even; NaN stays NaN; f16 overflows to ±inf (which fp16
// loss scaling detects).
#pragma once

#include "core/tensor.h"

namespace tessera {

// out = in converted to out's dtype: f32 -> bf16/f16 or bf16/f16 -> f32, same number of
// elements, one device. Throws Error naming the dtypes otherwise.
void convert(Tensor& out, const Tensor& in);

// The CPU's emulation of 16-bit operands (train.precision bf16 / fp16 on the CPU, the reference
// the CUDA path is tested against). round_to: x rounded to `type`'s precision (f32: x itself).
float round_to(float x, DType type);
// A CPU tensor as f32 rounded to `type`: x itself when both are f32, a widened copy of a 16-bit x
// (whose type must be `type`), or a rounded copy of an f32 x.
Tensor rounded_f32(const Tensor& x, DType type);

namespace cuda {  // launchers on device pointers (kernels/convert.cu)
void f32_to_bf16(bf16* out, const float* in, int64_t n, CudaStream stream);
void bf16_to_f32(float* out, const bf16* in, int64_t n, CudaStream stream);
void f32_to_f16(f16* out, const float* in, int64_t n, CudaStream stream);
void f16_to_f32(float* out, const f16* in, int64_t n, CudaStream stream);
}  // namespace cuda

}  // namespace tessera
