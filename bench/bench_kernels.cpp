// GFLOP/s (or GB/s) of each CPU kernel at the shapes of configs/tiny.yaml (B·T = 2048 rows,
// C = 256, V = 4096, 4 heads), to show where a training step's time goes.
// usage: build/bench/bench_kernels [--benchmark_filter=...]; OMP_NUM_THREADS sets the threads.
#include <benchmark/benchmark.h>

#include <random>

#include "kernels/attention.h"
#include "kernels/classifier.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"

namespace tessera {
namespace {

constexpr int64_t kB = 8, kT = 256, kC = 256, kV = 4096, kHeads = 4, kN = kB * kT;

Tensor random_tensor(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::f32);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

void set_flops(benchmark::State& state, double flops_per_iter) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iter * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
}

// The four linear layers of a block: (in, out) = (C, 3C), (C, C), (C, 4C), (4C, C).
void BM_MatmulForward(benchmark::State& state) {
  const int64_t ic = state.range(0), oc = state.range(1);
  Tensor x = random_tensor({kN, ic}, 1), w = random_tensor({ic, oc}, 2), b = random_tensor({oc}, 3);
  Tensor y = Tensor::empty({kN, oc}, DType::f32);
  for (auto _ : state) matmul_forward(y, x, w, b);
  set_flops(state, 2.0 * kN * ic * oc);
}
BENCHMARK(BM_MatmulForward)
    ->Args({kC, 3 * kC})
    ->Args({kC, kC})
    ->Args({kC, 4 * kC})
    ->Args({4 * kC, kC});

void BM_MatmulBackward(benchmark::State& state) {
  const int64_t ic = state.range(0), oc = state.range(1);
  Tensor x = random_tensor({kN, ic}, 1), w = random_tensor({ic, oc}, 2),
         dy = random_tensor({kN, oc}, 3);
  Tensor dx = Tensor::empty({kN, ic}, DType::f32), dw = Tensor::zeros({ic, oc}, DType::f32);
  Tensor db = Tensor::zeros({oc}, DType::f32);
  for (auto _ : state) matmul_backward(dx, dw, db, dy, x, w);
  set_flops(state, 4.0 * kN * ic * oc);
}
BENCHMARK(BM_MatmulBackward)
    ->Args({kC, 3 * kC})
    ->Args({kC, kC})
    ->Args({kC, 4 * kC})
    ->Args({4 * kC, kC});

// Causal attention: 2·T²·C multiply-adds forward over the causal half, twice that backward.
void BM_AttentionForward(benchmark::State& state) {
  Tensor qkv = random_tensor({kB, kT, 3 * kC}, 4), out = Tensor::empty({kB, kT, kC}, DType::f32);
  Tensor lse = Tensor::empty({kB, kHeads, kT}, DType::f32);
  for (auto _ : state) attention_forward(out, lse, qkv, kHeads);
  set_flops(state, 2.0 * kB * kT * kT * kC);
}
BENCHMARK(BM_AttentionForward);

void BM_AttentionBackward(benchmark::State& state) {
  Tensor qkv = random_tensor({kB, kT, 3 * kC}, 4), out = Tensor::empty({kB, kT, kC}, DType::f32);
  Tensor lse = Tensor::empty({kB, kHeads, kT}, DType::f32), dout = random_tensor({kB, kT, kC}, 5);
  Tensor dqkv = Tensor::empty({kB, kT, 3 * kC}, DType::f32);
  attention_forward(out, lse, qkv, kHeads);
  for (auto _ : state) attention_backward(dqkv, dout, qkv, out, lse, kHeads);
  set_flops(state, 4.0 * kB * kT * kT * kC);
}
BENCHMARK(BM_AttentionBackward);

// The tied LM head with cross-entropy, forward and backward: three (N, C, V) GEMMs.
void BM_ClassifierForwardBackward(benchmark::State& state) {
  Tensor x = random_tensor({kN, kC}, 6), wte = random_tensor({kV, kC}, 7);
  Tensor targets = Tensor::empty({kN}, DType::i32), losses = Tensor::empty({kN}, DType::f32);
  for (int64_t i = 0; i < kN; ++i) targets.data<int32_t>()[i] = static_cast<int32_t>(i * 7 % kV);
  Tensor dx = Tensor::empty({kN, kC}, DType::f32), dwte = Tensor::zeros({kV, kC}, DType::f32);
  for (auto _ : state) classifier_forward_backward(losses, dx, dwte, x, wte, targets, 1.0f / kN);
  set_flops(state, 6.0 * kN * kC * kV);
}
BENCHMARK(BM_ClassifierForwardBackward);

void BM_LayernormForward(benchmark::State& state) {
  Tensor x = random_tensor({kN, kC}, 8), w = random_tensor({kC}, 9), b = random_tensor({kC}, 10);
  Tensor y = Tensor::empty({kN, kC}, DType::f32), mean = Tensor::empty({kN}, DType::f32);
  Tensor rstd = Tensor::empty({kN}, DType::f32);
  for (auto _ : state) layernorm_forward(y, mean, rstd, x, w, b);
  state.SetBytesProcessed(state.iterations() * 2 * kN * kC * 4);
}
BENCHMARK(BM_LayernormForward);

// The block's residual add and ln_2: as two ops (two passes over the rows), and fused (one).
void BM_ResidualThenLayernorm(benchmark::State& state) {
  const bool fused = state.range(0) == 1;
  Tensor a = random_tensor({kN, kC}, 12), b = random_tensor({kN, kC}, 13);
  Tensor w = random_tensor({kC}, 14), bias = random_tensor({kC}, 15);
  Tensor res = Tensor::empty({kN, kC}, DType::f32), y = Tensor::empty({kN, kC}, DType::f32);
  Tensor mean = Tensor::empty({kN}, DType::f32), rstd = Tensor::empty({kN}, DType::f32);
  for (auto _ : state) {
    if (fused) {
      residual_layernorm_forward(res, y, mean, rstd, a, b, w, bias);
    } else {
      residual_forward(res, a, b);
      layernorm_forward(y, mean, rstd, res, w, bias);
    }
  }
  state.SetLabel(fused ? "fused" : "two ops");
}
BENCHMARK(BM_ResidualThenLayernorm)->Arg(0)->Arg(1);

void BM_GeluForwardBackward(benchmark::State& state) {
  Tensor x = random_tensor({kN, 4 * kC}, 11), y = Tensor::empty({kN, 4 * kC}, DType::f32);
  for (auto _ : state) {
    gelu_forward(y, x);
    gelu_backward(y, y, x);
  }
  state.SetBytesProcessed(state.iterations() * 5 * kN * 4 * kC * 4);
}
BENCHMARK(BM_GeluForwardBackward);

}  // namespace
}  // namespace tessera

BENCHMARK_MAIN();
