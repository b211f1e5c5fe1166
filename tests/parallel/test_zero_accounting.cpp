// The ZeRO formulas against the paper's own numbers (Figure 1: Ψ = 7.5B, N = 64, mixed-precision
// Adam: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB) and the fp32 AdamW variant Tessera runs on CPU.
#include <gtest/gtest.h>

#include "parallel/zero_accounting.h"

namespace tessera::parallel {
namespace {

TEST(ZeroFormulas, MatchThePapersFigure) {
  const BytesPerParam mixed{2, 2, 12};
  const double psi = 7.5e9, gb = 1e9;
  EXPECT_NEAR(zero_state_bytes(0, 64, psi, mixed) / gb, 120.0, 0.05);
  EXPECT_NEAR(zero_state_bytes(1, 64, psi, mixed) / gb, 31.4, 0.05);
  EXPECT_NEAR(zero_state_bytes(2, 64, psi, mixed) / gb, 16.6, 0.05);
  EXPECT_NEAR(zero_state_bytes(3, 64, psi, mixed) / gb, 1.9, 0.05);
}

TEST(ZeroFormulas, Fp32AdamWAndTraffic) {
  const double psi = 1000;
  EXPECT_EQ(zero_state_bytes(0, 4, psi), 16000);
  EXPECT_EQ(zero_state_bytes(1, 4, psi), 8000 + 2000);
  EXPECT_EQ(zero_state_bytes(2, 4, psi), 4000 + 3000);
  EXPECT_EQ(zero_state_bytes(3, 4, psi), 4000);
  // 2Ψ (all-reduce) for stages 0-2, 3Ψ for stage 3, times (N-1)/N, 4-byte elements.
  EXPECT_EQ(zero_wire_bytes_per_step(0, 4, psi), 2 * 0.75 * 4000);
  EXPECT_EQ(zero_wire_bytes_per_step(2, 4, psi), 2 * 0.75 * 4000);
  EXPECT_EQ(zero_wire_bytes_per_step(3, 4, psi), 3 * 0.75 * 4000);
  EXPECT_EQ(zero_wire_bytes_per_step(3, 1, psi), 0);
  // With 4 micro-batches: stage 1 still reduces once, stage 2 reduce-scatters each micro-batch,
  // stage 3 gathers twice and reduce-scatters each micro-batch.
  EXPECT_EQ(zero_wire_bytes_per_step(1, 4, psi, 4), 2 * 0.75 * 4000);
  EXPECT_EQ(zero_wire_bytes_per_step(2, 4, psi, 4), 5 * 0.75 * 4000);
  EXPECT_EQ(zero_wire_bytes_per_step(3, 4, psi, 4), 12 * 0.75 * 4000);
  EXPECT_THROW(zero_state_bytes(4, 4, psi), Error);
}

}  // namespace
}  // namespace tessera::parallel
