// Test helpers shared by the numerical tests: seeded random fills, float64 copies, relative error,
// central finite differences, and poison for outputs so that unwritten elements show.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "core/tensor.h"

namespace tessera::testing {

// A fresh seed per test run unless TESSERA_TEST_SEED is set (the seed is printed on failure).
uint64_t test_seed();

// Fills a f32 tensor with N(0, stddev) values.
void fill_normal(Tensor& t, std::mt19937_64& rng, float stddev = 1.0f);
// A new f32 CPU tensor of `shape` filled so.
Tensor randn(const Shape& shape, std::mt19937_64& rng, float stddev = 1.0f);
// Fills a f32 tensor with U(lo, hi) values.
void fill_uniform(Tensor& t, std::mt19937_64& rng, float lo, float hi);
// Fills a f32 tensor with NaN so that elements a kernel forgot to write show.
void poison(Tensor& t);

// A (b, t) i32 tensor of token ids drawn uniformly from [0, vocab).
Tensor random_tokens(int64_t b, int64_t t, int64_t vocab, std::mt19937_64& rng);

// A f32 CPU tensor's values as float64.
std::vector<double> to_f64(const Tensor& t);

// ||a - b|| / max(||b||, tiny) over all elements; NaN anywhere gives +inf.
double rel_error(const std::vector<double>& a, const std::vector<double>& b);
double rel_error(const Tensor& a, const std::vector<double>& b);

// GPT-2's key bias, the middle third of a (3C) c_attn.bias, adds q·b_k to every score of a query
// row, which softmax ignores: its exact gradient is zero, and AdamW's m/√v turns the round-off
// left in its place into full-size steps of either sign. Weight comparisons after AdamW steps
// leave it out with this (the gradient itself is still compared).
std::vector<double> without_key_bias(std::vector<double> c_attn_bias);

// rel_error of weights after AdamW steps, each element's difference first lessened by a slack of
// 1% of the learning rates summed over the steps. Where a gradient element is near Adam's eps at
// some step, m/(√v + eps) changes by up to δg/eps for a round-off δg in it, so two correct runs
// that sum in different orders may differ there by a small fraction of lr; a wrong gradient or
// weight moves elements by whole steps and still fails.
double adamw_weight_error(const std::vector<double>& got, const std::vector<double>& want,
                          double lr_sum);

// Central finite differences of a scalar function f of x (float64), step h per element.
std::vector<double> finite_diff(const std::function<double(const std::vector<double>&)>& f,
                                std::vector<double> x, double h = 1e-6);

}  // namespace tessera::testing
