// For tests that need a CUDA device: they skip without one (CI), except where
// TESSERA_REQUIRE_CUDA is set (scripts/gpu_check.sh on the GPU machine), where a missing device
// is a failure instead of a quiet skip.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>

#include "core/device.h"

// In a test body or SetUp: returns from it (skipped or failed) unless a CUDA device is visible.
#define TS_REQUIRE_CUDA_DEVICE()                                                             \
  do {                                                                                       \
    if (!::tessera::cuda_available()) {                                                      \
      if (std::getenv("TESSERA_REQUIRE_CUDA")) FAIL() << "TESSERA_REQUIRE_CUDA set, no GPU"; \
      GTEST_SKIP() << "no CUDA device (or a build without CUDA)";                            \
    }                                                                                        \
  } while (0)
