#include "core/dtype.h"

#include "core/error.h"

namespace tessera {
namespace {

struct DTypeInfo {
  DType type;
  size_t size;
  const char* name;
  const char* st_name;
};

constexpr DTypeInfo kInfo[] = {
    {DType::f32, 4, "f32", "F32"}, {DType::bf16, 2, "bf16", "BF16"}, {DType::f16, 2, "f16", "F16"},
    {DType::i32, 4, "i32", "I32"}, {DType::i8, 1, "i8", "I8"},       {DType::u8, 1, "u8", "U8"},
    {DType::u16, 2, "u16", "U16"},
};

const DTypeInfo& info(DType t) {
  return kInfo[static_cast<int>(t)];
}

}  // namespace

size_t dtype_size(DType t) {
  return info(t).size;
}
const char* dtype_name(DType t) {
  return info(t).name;
}
const char* safetensors_dtype(DType t) {
  return info(t).st_name;
}

DType dtype_from_name(std::string_view name) {
  for (const auto& i : kInfo)
    if (name == i.name) return i.type;
  TS_THROW("unknown dtype '", name, "': use one of f32, bf16, f16, i32, i8, u8, u16");
}

DType dtype_from_safetensors(std::string_view name) {
  for (const auto& i : kInfo)
    if (name == i.st_name) return i.type;
  TS_THROW("safetensors dtype '", name,
           "' is not supported: Tessera holds F32, BF16, F16, I32, I8, U8, U16");
}

f16 to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return f16{static_cast<uint16_t>(sign | 0x7e00u)};   // NaN
  if (abs >= 0x47800000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow -> inf
  if (abs < 0x38800000u) {  // subnormal or zero in f16
    if (abs < 0x33000000u) return f16{static_cast<uint16_t>(sign)};
    const uint32_t mant = (abs & 0x007fffffu) | 0x00800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return f16{static_cast<uint16_t>(sign | h)};
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return f16{static_cast<uint16_t>(sign | h)};
}

float to_float(f16 h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  uint32_t mant = h.bits & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      x = sign | ((112 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

}  // namespace tessera
