#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "tests/support/numeric.h"

namespace tessera {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

constexpr DType kAll[] = {DType::f32, DType::bf16, DType::f16, DType::i32,
                          DType::i8,  DType::u8,   DType::u16};

// Reference f32 -> bf16: of the two bf16 values around |f| (f truncated, and the next one up),
// the one nearer in exact double arithmetic; a tie goes to the even one. Past the largest bf16
// the next value up is 2^128, i.e. infinity.
uint16_t bf16_reference(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t sign = u & 0x80000000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (std::isnan(f)) return 0x7fc0;  // any NaN; compared by isnan below
  if (std::isinf(f)) return static_cast<uint16_t>((sign | 0x7f800000u) >> 16);
  const uint32_t lo = abs & 0xffff0000u;
  const int exp = static_cast<int>(lo >> 23);
  const double ulp = std::ldexp(1.0, std::max(exp, 1) - 127 - 7);
  const double x = from_bits(abs);
  const double below = from_bits(lo);
  const double above = below + ulp;
  const bool lo_even = ((lo >> 16) & 1u) == 0;
  const bool up = (above - x < x - below) || (above - x == x - below && !lo_even);
  return static_cast<uint16_t>((sign | (up ? lo + 0x10000u : lo)) >> 16);
}

void expect_bf16(float f) {
  const uint16_t got = to_bf16(f).bits;
  if (std::isnan(f)) {
    EXPECT_TRUE(std::isnan(to_float(bf16{got}))) << std::hex << bits_of(f);
    return;
  }
  EXPECT_EQ(got, bf16_reference(f)) << std::hex << "f32 bits 0x" << bits_of(f);
}

TEST(DType, Bf16RoundsToNearestEven) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 1'000'000; ++i) expect_bf16(from_bits(static_cast<uint32_t>(rng())));
  const float inf = std::numeric_limits<float>::infinity();
  for (float f : {0.0f, -0.0f, 1.0f, -1.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                  from_bits(0x7f7f8000u), from_bits(0x7f7f7fffu), from_bits(0x7fc00001u),
                  from_bits(0xff800001u), from_bits(0x00008000u), from_bits(0x00018000u)})
    expect_bf16(f);
  // Ties in every binade go to the even neighbour; one past a tie rounds up.
  for (uint32_t e = 0; e < 255; ++e)
    for (uint32_t m : {0x00008000u, 0x00018000u, 0x00008001u, 0x00007fffu, 0x007f8000u}) {
      expect_bf16(from_bits((e << 23) | m));
      expect_bf16(from_bits(0x80000000u | (e << 23) | m));
    }
  EXPECT_EQ(to_bf16(from_bits(0x3f808000u)).bits, 0x3f80);  // tie, even below
  EXPECT_EQ(to_bf16(from_bits(0x3f818000u)).bits, 0x3f82);  // tie, odd below: up
  EXPECT_EQ(to_bf16(from_bits(0x7f7f8000u)).bits, 0x7f80);  // max bf16 + half ulp: inf
  for (uint32_t b = 0; b < 0x10000u; ++b) {  // bf16 -> f32 -> bf16 is exact for non-NaN
    const float f = to_float(bf16{static_cast<uint16_t>(b)});
    if (!std::isnan(f)) {
      EXPECT_EQ(to_bf16(f).bits, b);
    }
  }
}

// Reference f16 -> f32: the value from its fields in double arithmetic.
double f16_value(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = std::ldexp(mant, -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : HUGE_VAL;
  } else {
    v = std::ldexp(1024 + mant, exp - 25);
  }
  return sign ? -v : v;
}

TEST(DType, F16EveryBitPatternConvertsAndRoundTrips) {
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const float f = to_float(f16{h});
    const double ref = f16_value(h);
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << b;
      EXPECT_TRUE(std::isnan(to_float(to_f16(f)))) << std::hex << b;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), ref) << std::hex << b;
    EXPECT_EQ(std::signbit(f), (b & 0x8000u) != 0) << std::hex << b;
    EXPECT_EQ(to_f16(f).bits, h) << std::hex << b;
  }
}

// Reference f32 -> f16 in long double: scale |f| to units of the f16 spacing at its magnitude,
// round half to even, and overflow to infinity at 65520 (= max f16 + half an ulp).
long double f16_reference(float f) {
  const long double x = std::fabs(static_cast<long double>(f));
  int e;
  std::frexp(x, &e);  // x in [2^(e-1), 2^e)
  const long double ulp = std::ldexp(1.0L, std::max(e - 1, -14) - 10);
  const long double q = x / ulp;
  long double n = std::floor(q);
  const long double rem = q - n;
  if (rem > 0.5L || (rem == 0.5L && std::fmod(n, 2.0L) == 1.0L)) n += 1;
  const long double v = n * ulp;
  return v > 65504.0L ? HUGE_VALL : v;
}

void expect_f16(float f) {
  const f16 h = to_f16(f);
  if (std::isnan(f)) {
    EXPECT_TRUE(std::isnan(to_float(h))) << std::hex << bits_of(f);
    return;
  }
  const long double ref = std::isinf(f) ? HUGE_VALL : f16_reference(f);
  EXPECT_EQ(static_cast<long double>(std::fabs(to_float(h))), ref)
      << std::hex << "f32 bits 0x" << bits_of(f);
  EXPECT_EQ((h.bits & 0x8000u) != 0, std::signbit(f)) << std::hex << bits_of(f);
}

TEST(DType, F16RoundsToNearestEven) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 1'000'000; ++i) {
    uint32_t u = static_cast<uint32_t>(rng());
    // Half the samples anywhere, half in and around f16's range (2^-26 .. 2^17).
    if (i % 2) u = (u & 0x807fffffu) | ((101u + static_cast<uint32_t>(rng() % 44)) << 23);
    expect_f16(from_bits(u));
  }
  for (float f : {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e10f,
                  std::ldexp(1.0f, -24), std::ldexp(1.0f, -25), std::ldexp(1.5f, -25),
                  std::ldexp(1.0f, -26), std::ldexp(1.5f, -24), std::ldexp(2.5f, -24),
                  std::ldexp(1.0f, -14), std::ldexp(1023.5f, -24), 1.0f + std::ldexp(1.0f, -11),
                  1.0f + std::ldexp(3.0f, -11), std::numeric_limits<float>::denorm_min()})
    expect_f16(f);
  EXPECT_EQ(to_f16(65520.0f).bits, 0x7c00);                      // max f16 + half ulp: inf
  EXPECT_EQ(to_f16(std::ldexp(1.0f, -25)).bits, 0x0000);         // half the smallest subnormal: 0
  EXPECT_EQ(to_f16(std::ldexp(1.5f, -24)).bits, 0x0002);         // tie between 1 and 2 ulps: even
  EXPECT_EQ(to_f16(1.0f + std::ldexp(1.0f, -11)).bits, 0x3c00);  // tie: even (1.0)
}

TEST(DType, NamesRoundTripAndUnknownNamesThrow) {
  const size_t sizes[] = {4, 2, 2, 4, 1, 1, 2};
  for (size_t i = 0; i < std::size(kAll); ++i) {
    const DType t = kAll[i];
    EXPECT_EQ(dtype_size(t), sizes[i]);
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
    EXPECT_EQ(dtype_from_safetensors(safetensors_dtype(t)), t);
  }
  EXPECT_STREQ(dtype_name(DType::bf16), "bf16");
  EXPECT_STREQ(safetensors_dtype(DType::u16), "U16");
  for (const char* bad : {"F32", "fp32", "", "float"}) {
    try {
      dtype_from_name(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("use one of f32, bf16"), std::string::npos) << e.what();
    }
  }
  for (const char* bad : {"f32", "F64", "BOOL", "I64"}) {
    try {
      dtype_from_safetensors(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not supported"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace tessera
