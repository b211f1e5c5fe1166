// Helpers for the multi-rank tests: a seed shared by all ranks and per-rank inputs that every rank
// can recompute, so each collective is checked against a local float64 reference.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "tests/support/numeric.h"

namespace tessera::testing {

// Rank 0's test_seed(), broadcast to every rank.
inline uint64_t shared_seed() {
  uint64_t seed = test_seed();
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  return seed;
}

// The n values rank `rank` contributes under `seed` (N(0, 1)), reproducible on every rank.
inline std::vector<float> input_of(uint64_t seed, int rank, int64_t n, int stream = 0) {
  std::mt19937_64 rng(seed * 1000003u + static_cast<uint64_t>(rank) * 7919u +
                      static_cast<uint64_t>(stream));
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

inline Tensor f32_tensor(const std::vector<float>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::f32);
  for (size_t i = 0; i < v.size(); ++i) t.data<float>()[i] = v[i];
  return t;
}

inline std::vector<float> values(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace tessera::testing
