// Element types a Tensor can hold, their sizes and names, and bf16/f16 <-> f32 conversion.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tessera {

enum class DType : uint8_t { f32, bf16, f16, i32, i8, u8, u16 };

// Bytes per element.
size_t dtype_size(DType t);
// Short lower-case name used in configs and messages ("f32", "bf16", ...).
const char* dtype_name(DType t);
// Parses a config name; throws Error listing the accepted names.
DType dtype_from_name(std::string_view name);
// The safetensors spelling ("F32", "BF16", "F16", "I32", "I8", "U8", "U16").
const char* safetensors_dtype(DType t);
// Parses a safetensors dtype; throws Error for a dtype Tessera does not hold.
DType dtype_from_safetensors(std::string_view name);

// bf16 and f16 are stored as their 16 raw bits.
struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

// Round-to-nearest-even f32 -> bf16 (NaN stays NaN).
inline bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}
inline float to_float(bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// IEEE binary16 conversions, round-to-nearest-even, with subnormals, inf and NaN.
f16 to_f16(float f);
float to_float(f16 h);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct DTypeOf<bf16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct DTypeOf<f16> {
  static constexpr DType value = DType::f16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::i8;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::u8;
};
template <>
struct DTypeOf<uint16_t> {
  static constexpr DType value = DType::u16;
};

}  // namespace tessera
