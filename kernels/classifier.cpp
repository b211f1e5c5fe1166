#include "kernels/classifier.h"

#include <cblas.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/convert.h"
#include "kernels/kernel_util.h"
#include "kernels/matmul.h"
#include "kernels/vec_math.h"

namespace tessera {
namespace {

using kernels_detail::Backend;
using kernels_detail::backend_f32;
using kernels_detail::exp_f32;
using kernels_detail::kOpStream;

// Rows per chunk: about 1M logits (4 MB) of scratch at a time, at least 32 rows.
int64_t chunk_rows(int64_t vocab) {
  return std::max<int64_t>(32, (int64_t{1} << 20) / vocab);
}

struct Dims {
  int64_t n, c, v;      // rows, channels, rows of wte (this rank's vocabulary)
  int64_t start, full;  // wte's first vocabulary id, and the whole vocabulary
  Backend backend;
};

Dims check(const char* op, const Tensor& losses, const Tensor& x, const Tensor& wte,
           const Tensor& targets, const VocabShard& shard) {
  const Backend backend = backend_f32(op, {{"losses", losses}, {"x", x}, {"wte", wte}});
  TS_CHECK_EQ(wte.dim(), 2, op, ": wte must be (V, C), got ", shape_str(wte.shape()));
  const int64_t v = wte.size(0), c = wte.size(1);
  const int64_t full = shard.size > 0 ? shard.size : v;
  TS_CHECK(shard.start >= 0 && shard.start + v <= full, op, ": wte rows [", shard.start, ", ",
           shard.start + v, ") outside the vocabulary [0, ", full, ")");
  TS_CHECK(x.dim() >= 1 && x.size(-1) == c, op, ": x ", shape_str(x.shape()),
           " must end in C = ", c);
  const int64_t n = x.numel() / c;
  TS_CHECK(targets.dtype() == DType::i32 && targets.device() == x.device() && targets.numel() == n,
           op, ": targets must be ", n, " i32 values on ", x.device().str(), ", got ",
           shape_str(targets.shape()), " ", dtype_name(targets.dtype()), " on ",
           targets.device().str());
  TS_CHECK_EQ(losses.numel(), n, op, ": losses must hold one value per row");
  TS_CHECK(backend == Backend::cpu || (!shard.all_reduce_max && !shard.all_reduce_sum), op,
           ": the vocabulary-parallel loss runs on cpu only so far (its CUDA form comes with "
           "NCCL training): use parallel.tp = 1 on CUDA");
  const Tensor host = targets.is_cpu() ? targets : targets.to(Device::cpu());
  const int32_t* t = host.data<int32_t>();
  for (int64_t i = 0; i < n; ++i)
    TS_CHECK(t[i] >= 0 && t[i] < full, op, ": target ", t[i], " at row ", i,
             " is outside the vocabulary [0, ", full, ")");
  return {n, c, v, shard.start, full, backend};
}

// Rows [0, rows) of one chunk: logits -> losses (with the other ranks' statistics when the
// vocabulary is split); with backward, turns logits into dlogits in place.
void softmax_xent_rows(float* logits, float* losses, const int32_t* targets, int64_t rows,
                       const Dims& d, const VocabShard& shard, float dloss, bool backward,
                       std::vector<float>& stats) {
  const int64_t v = d.v;
  stats.resize(3 * rows);
  float* mx = stats.data();  // row maxima
  float* sums = mx + rows;   // row sums of exp(l - max), then target logits
  float* target_logit = sums + rows;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * v;
    float m = l[0];
#pragma omp simd reduction(max : m)
    for (int64_t j = 1; j < v; ++j) m = std::max(m, l[j]);
    mx[r] = m;
  }
  if (shard.all_reduce_max) shard.all_reduce_max(mx, rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* l = logits + r * v;
    const int64_t local = targets[r] - d.start;
    target_logit[r] = local >= 0 && local < v ? l[local] : 0.0f;
    const float m = mx[r];
    float sum = 0.0f;  // simd lanes sum in a fixed order: deterministic, and vectorized
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < v; ++j) {
      l[j] = exp_f32(l[j] - m);
      sum += l[j];
    }
    sums[r] = sum;
  }
  if (shard.all_reduce_sum) shard.all_reduce_sum(sums, 2 * rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    losses[r] = std::log(sums[r]) + mx[r] - target_logit[r];
    if (!backward) continue;
    float* l = logits + r * v;
    // Probabilities below FLT_MIN / scale would become subnormal gradients: they change the
    // GEMMs below by less than f32 round-off and slow them ~10x, so they become zero.
    const float scale = dloss / sums[r];
    const float tiny = std::numeric_limits<float>::min();
#pragma omp simd
    for (int64_t j = 0; j < v; ++j) {
      const float g = l[j] * scale;
      l[j] = std::fabs(g) < tiny ? 0.0f : g;
    }
    const int64_t local = targets[r] - d.start;
    if (local >= 0 && local < v) l[local] -= dloss;
  }
}

#ifdef TESSERA_WITH_CUDA
// run() on CUDA: equal row chunks of up to 256M logits (at least 32 rows) in one device buffer of
// the GEMMs' type (GPT-2 124M at 16 × 1024 tokens in bf16: 412 MB), the softmax turning them into
// dlogits in place for the backward GEMMs. Larger chunks make larger GEMMs: GPT-2 124M's LM head
// in 4 chunks of 4096 rows took 5.4 ms of GEMMs and 2.8 of softmax (fp32 logits) a step on an
// H100, in 13 chunks of 1334 rows 7.3 and 5.2.
void run_cuda(Tensor& losses, Tensor* dx, Tensor* dwte, const Tensor& x, const Tensor& wte,
              const Tensor& targets, float dloss, const Dims& d, DType compute) {
  const int64_t max_rows = std::max<int64_t>(32, (int64_t{1} << 28) / d.v);
  const int64_t chunks = std::max<int64_t>(1, (d.n + max_rows - 1) / max_rows);
  const int64_t chunk = std::max<int64_t>(1, (d.n + chunks - 1) / chunks);
  const int64_t chunk_rows = std::min(chunk, d.n);
  Tensor logits = Tensor::empty({chunk_rows, d.v}, compute, x.device());
  const Tensor xs = gemm_operand(x.view({d.n, d.c}), compute), w = gemm_operand(wte, compute);
  const cuda::GemmTypes types{compute, DType::f32};
  kernels_detail::visit_float(compute, [&]<class L>() {
    for (int64_t r0 = 0; r0 < d.n; r0 += chunk) {
      const int64_t rows = std::min(chunk, d.n - r0);
      const Tensor xr = xs.narrow(r0, rows);
      Tensor l = logits.narrow(0, rows);
      // logits (rows, V) = x (rows, C) · wte (V, C)ᵀ
      cuda::gemm(l.raw(), xr.raw(), w.raw(), nullptr, rows, d.v, d.c, false, true, 0.0f, kOpStream,
                 {compute, compute});
      float* row_losses = losses.data<float>() + r0;
      const int32_t* row_targets = targets.data<int32_t>() + r0;
      if (!dx) {
        cuda::softmax_xent_forward(l.data<L>(), row_losses, row_targets, rows, d.v, d.start,
                                   kOpStream);
        continue;
      }
      cuda::softmax_xent(l.data<L>(), row_losses, row_targets, rows, d.v, d.start, dloss,
                         kOpStream);
      // dx (rows, C) = dlogits (rows, V) · wte (V, C);  dwte (V, C) += dlogitsᵀ · x (rows, C)
      cuda::gemm(dx->data<float>() + r0 * d.c, l.raw(), w.raw(), nullptr, rows, d.c, d.v, false,
                 false, 0.0f, kOpStream, types);
      cuda::gemm(dwte->data<float>(), l.raw(), xr.raw(), nullptr, d.v, d.c, rows, true, false, 1.0f,
                 kOpStream, types);
    }
  });
}
#endif

void run(Tensor& losses, Tensor* dx, Tensor* dwte, const Tensor& x, const Tensor& wte,
         const Tensor& targets, float dloss, const Dims& d, const VocabShard& shard,
         DType compute) {
  check_gemm_compute(compute);
  TS_RUN_ON_CUDA(d.backend, run_cuda(losses, dx, dwte, x, wte, targets, dloss, d, compute));
  const int64_t chunk = chunk_rows(d.v);
  std::vector<float> logits(std::min(chunk, d.n) * d.v);
  std::vector<float> stats;
  // 16-bit compute: the GEMMs' operands rounded as on CUDA (kernels/convert.h), fp32 products.
  const Tensor x_operand = rounded_f32(x, compute), w_operand = rounded_f32(wte, compute);
  const float* xp = x_operand.data<float>();
  const float* w = w_operand.data<float>();
  for (int64_t r0 = 0; r0 < d.n; r0 += chunk) {
    const int64_t rows = std::min(chunk, d.n - r0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, d.v, d.c, 1.0f, xp + r0 * d.c, d.c,
                w, d.c, 0.0f, logits.data(), d.v);
    if (compute != DType::f32)  // the logits as the 16-bit GEMM writes them
      for (int64_t i = 0; i < rows * d.v; ++i) logits[i] = round_to(logits[i], compute);
    softmax_xent_rows(logits.data(), losses.data<float>() + r0, targets.data<int32_t>() + r0, rows,
                      d, shard, dloss, dx != nullptr, stats);
    if (dx) {
      if (compute != DType::f32)
        for (int64_t i = 0; i < rows * d.v; ++i) logits[i] = round_to(logits[i], compute);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d.c, d.v, 1.0f, logits.data(),
                  d.v, w, d.c, 0.0f, dx->data<float>() + r0 * d.c, d.c);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.v, d.c, rows, 1.0f, logits.data(), d.v,
                  xp + r0 * d.c, d.c, 1.0f, dwte->data<float>(), d.c);
    }
  }
}

}  // namespace

void classifier_forward(Tensor& losses, const Tensor& x, const Tensor& wte, const Tensor& targets,
                        const VocabShard& shard, DType compute) {
  const Dims d = check("classifier_forward", losses, x, wte, targets, shard);
  run(losses, nullptr, nullptr, x, wte, targets, 0.0f, d, shard, compute);
}

void classifier_forward_backward(Tensor& losses, Tensor& dx, Tensor& dwte, const Tensor& x,
                                 const Tensor& wte, const Tensor& targets, float dloss,
                                 const VocabShard& shard, DType compute) {
  const Dims d = check("classifier_forward_backward", losses, x, wte, targets, shard);
  backend_f32("classifier_forward_backward", {{"x", x}, {"dx", dx}, {"dwte", dwte}});
  dx.expect("classifier dx", x.shape(), DType::f32);
  dwte.expect("classifier dwte", wte.shape(), DType::f32);
  run(losses, &dx, &dwte, x, wte, targets, dloss, d, shard, compute);
}

void logits_forward(Tensor& logits, const Tensor& x, const Tensor& wte) {
  const auto backend = backend_f32("logits_forward", {{"logits", logits}, {"x", x}, {"wte", wte}});
  const int64_t v = wte.size(0), c = wte.size(1);
  TS_CHECK(x.dim() >= 1 && x.size(-1) == c, "logits_forward: x ", shape_str(x.shape()),
           " must end in C = ", c);
  const int64_t n = x.numel() / c;
  TS_CHECK_EQ(logits.numel(), n * v, "logits_forward: logits ", shape_str(logits.shape()));
  TS_RUN_ON_CUDA(backend, cuda::gemm(logits.data<float>(), x.data<float>(), wte.data<float>(),
                                     nullptr, n, v, c, false, true, 0.0f, kOpStream));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, v, c, 1.0f, x.data<float>(), c,
              wte.data<float>(), c, 0.0f, logits.data<float>(), v);
}

}  // namespace tessera
