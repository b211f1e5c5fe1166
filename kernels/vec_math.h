// exp and tanh for f32 written as straight-line arithmetic, so that loops calling them vectorize
// (glibc's expf/tanhf are scalar calls, and tanhf alone was a fifth of a CPU training step).
// Both stay within a few ulp of the float64 result over the whole f32 range, and propagate NaN.
#pragma once

#include <bit>
#include <cstdint>

namespace tessera::kernels_detail {

// e^x: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial (truncation < 1e-8
// relative), 2^n put into the exponent bits. Below e^x = FLT_MIN it gives 0 (no denormals), above
// x = 88 it gives +∞ (true overflow is at 88.72); exp(NaN) = NaN.
inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln2 in two parts
  constexpr float kRound = 12582912.0f;                             // 1.5·2²³: rounds to integer
  constexpr float kMax = 88.0f, kMin = -87.3365447505531f;          // e^kMin = FLT_MIN
  const float xc = x > kMax ? kMax : (x < kMin ? kMin : x);         // NaN passes through unchanged
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const uint32_t n_bits = std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kRound);
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n as a float: n ∈ [−126, 127] after the clamp, so n + 127 is a normal exponent.
  const float scale = std::bit_cast<float>((n_bits + 127u) << 23);
  const float e = p * scale;
  return x < kMin ? 0.0f : (x > kMax ? __builtin_inff() : e);
}

// tanh(x) = 1 − 2 / (e^{2x} + 1). Absolute error a few 1e-8 (relative error grows near 0, where
// tanh is tiny; callers here add it to 1 or square it, so absolute error is what counts).
inline float tanh_f32(float x) {
  const float xc = x > 10.0f ? 10.0f : (x < -10.0f ? -10.0f : x);  // tanh(±10) = ±1 in f32
  return 1.0f - 2.0f / (exp_f32(2.0f * xc) + 1.0f);
}

}  // namespace tessera::kernels_detail
