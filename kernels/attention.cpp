#include "kernels/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/convert.h"
#include "kernels/kernel_util.h"
#include "kernels/matmul.h"
#include "kernels/vec_math.h"

namespace tessera {
namespace {

using kernels_detail::backend_f32;
using kernels_detail::exp_f32;
using kernels_detail::kOpStream;
using kernels_detail::load;
using kernels_detail::store;

// Rows of a query tile and columns of a key tile: 64×64 scores (16 KiB) stay in L1/L2 together
// with the 64×hs tiles of q, k, v they come from.
constexpr int64_t kTile = 64;

struct Dims {
  int64_t b, t, c, nh, hs;
  int64_t tiles() const { return (t + kTile - 1) / kTile; }
};

Dims check(const char* op, const Tensor& qkv, int64_t num_heads) {
  TS_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, op, ": qkv must be (B, T, 3C), got ",
           shape_str(qkv.shape()));
  const int64_t c = qkv.size(2) / 3;
  TS_CHECK(num_heads > 0 && c % num_heads == 0, op, ": C = ", c,
           " is not divisible by num_heads = ", num_heads);
  return {qkv.size(0), qkv.size(1), c, num_heads, c / num_heads};
}

// The [begin, end) rows of tile i.
struct Span {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};
Span tile(const Dims& d, int64_t i) {
  return {i * kTile, std::min(d.t, (i + 1) * kTile)};
}

// scores (nq, nk) = scale · q_tile · k_tileᵀ, then −∞ where the key comes after the query.
void tile_scores(float* scores, const float* q, const float* k, Span qs, Span ks, int64_t ld,
                 int64_t hs, float scale) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qs.size(), ks.size(), hs, scale, q, ld, k,
              ld, 0.0f, scores, ks.size());
  if (ks.end - 1 <= qs.begin) return;  // the whole tile is at or below the diagonal
  for (int64_t r = 0; r < qs.size(); ++r)
    for (int64_t j = std::max<int64_t>(0, qs.begin + r + 1 - ks.begin); j < ks.size(); ++j)
      scores[r * ks.size() + j] = -std::numeric_limits<float>::infinity();
}

// The CPU forward over every (batch, head, query tile); out's type Y. x: qkv as f32, already
// rounded to `compute` when that is 16-bit, which also rounds the probabilities before P·V (their
// row sums taken from the rounded values), as the tensor-core kernels do.
template <class Y>
void forward_cpu(Y* o, float* l, const float* x, const Dims& d, DType compute) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hs));
  const int64_t ld = 3 * d.c, tiles = d.tiles();

#pragma omp parallel
  {
    std::vector<float> scores(kTile * kTile), acc(kTile * d.hs), row_max(kTile), row_sum(kTile);
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < d.b; ++b)
      for (int64_t h = 0; h < d.nh; ++h)
        for (int64_t qi = 0; qi < tiles; ++qi) {
          const Span qs = tile(d, qi);
          const float* q = x + (b * d.t + qs.begin) * ld + h * d.hs;
          std::fill(acc.begin(), acc.end(), 0.0f);
          std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<float>::infinity());
          std::fill(row_sum.begin(), row_sum.end(), 0.0f);
          for (int64_t ki = 0; ki <= qi; ++ki) {
            const Span ks = tile(d, ki);
            const float* k = x + (b * d.t + ks.begin) * ld + d.c + h * d.hs;
            const float* v = k + d.c;
            tile_scores(scores.data(), q, k, qs, ks, ld, d.hs, scale);
            // Online softmax: rescale what was accumulated under the old row maximum.
            for (int64_t r = 0; r < qs.size(); ++r) {
              float* s = scores.data() + r * ks.size();
              float m = row_max[r];
#pragma omp simd reduction(max : m)
              for (int64_t j = 0; j < ks.size(); ++j) m = std::max(m, s[j]);
              const float correction = exp_f32(row_max[r] - m);
              float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
              for (int64_t j = 0; j < ks.size(); ++j) {
                s[j] = exp_f32(s[j] - m);
                sum += s[j];
              }
              if (compute != DType::f32) {
                sum = 0.0f;
                for (int64_t j = 0; j < ks.size(); ++j) {
                  s[j] = round_to(s[j], compute);
                  sum += s[j];
                }
              }
              row_sum[r] = row_sum[r] * correction + sum;
              row_max[r] = m;
              float* a = acc.data() + r * d.hs;
              for (int64_t e = 0; e < d.hs; ++e) a[e] *= correction;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qs.size(), d.hs, ks.size(), 1.0f,
                        scores.data(), ks.size(), v, ld, 1.0f, acc.data(), d.hs);
          }
          for (int64_t r = 0; r < qs.size(); ++r) {
            const float inv = 1.0f / row_sum[r];
            Y* dst = o + (b * d.t + qs.begin + r) * d.c + h * d.hs;
            for (int64_t e = 0; e < d.hs; ++e) store(dst[e], acc[r * d.hs + e] * inv);
            l[(b * d.nh + h) * d.t + qs.begin + r] = row_max[r] + std::log(row_sum[r]);
          }
        }
  }
}

// The CPU backward; out's type Y. x and dout_r: qkv and dout as f32, rounded to `compute` when that
// is 16-bit, which also rounds P before dV = Pᵀ·dO and dS before dQ and dK, as the tensor-core
// kernels do.
template <class Y>
void backward_cpu(float* dx, const float* x, const float* dout_r, const Y* o, const float* l,
                  const Dims& d, DType compute) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hs));
  const int64_t ld = 3 * d.c, tiles = d.tiles();

  // One (batch, head) per task: it owns its slices of dq, dk and dv, so tiles accumulate into
  // them in a fixed order without atomics and the result is the same for any thread count.
#pragma omp parallel
  {
    std::vector<float> p(kTile * kTile), dp(kTile * kTile), delta(d.t);
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < d.b; ++b)
      for (int64_t h = 0; h < d.nh; ++h) {
        const int64_t row0 = b * d.t;
        const float* lse_bh = l + (b * d.nh + h) * d.t;
        // delta_i = Σ_e dout_ie · out_ie = Σ_j P_ij dP_ij, the softmax backward's row term.
        for (int64_t i = 0; i < d.t; ++i) {
          const float* go = dout_r + (row0 + i) * d.c + h * d.hs;
          const Y* oi = o + (row0 + i) * d.c + h * d.hs;
          float s = 0.0f;
          for (int64_t e = 0; e < d.hs; ++e) s += go[e] * load(oi[e]);
          delta[i] = s;
          float* dqkv_i = dx + (row0 + i) * ld + h * d.hs;
          for (int64_t part = 0; part < 3; ++part)
            std::fill(dqkv_i + part * d.c, dqkv_i + part * d.c + d.hs, 0.0f);
        }
        for (int64_t ki = 0; ki < tiles; ++ki) {
          const Span ks = tile(d, ki);
          const int64_t koff = (row0 + ks.begin) * ld + d.c + h * d.hs;
          const float *k = x + koff, *v = k + d.c;
          float *dk = dx + koff, *dv = dk + d.c;
          for (int64_t qi = ki; qi < tiles; ++qi) {
            const Span qs = tile(d, qi);
            const int64_t qoff = (row0 + qs.begin) * ld + h * d.hs;
            const float* q = x + qoff;
            float* dq = dx + qoff;
            const float* go = dout_r + (row0 + qs.begin) * d.c + h * d.hs;
            // P = exp(S − lse): the forward's probabilities, rebuilt tile by tile.
            tile_scores(p.data(), q, k, qs, ks, ld, d.hs, scale);
            for (int64_t r = 0; r < qs.size(); ++r)
              for (int64_t j = 0; j < ks.size(); ++j)
                p[r * ks.size() + j] = exp_f32(p[r * ks.size() + j] - lse_bh[qs.begin + r]);
            // dP = dout · vᵀ;  dS = P ∘ (dP − delta);  dv += Pᵀ · dout.
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qs.size(), ks.size(), d.hs, 1.0f,
                        go, d.c, v, ld, 0.0f, dp.data(), ks.size());
            for (int64_t r = 0; r < qs.size(); ++r)
              for (int64_t j = 0; j < ks.size(); ++j) {
                const int64_t idx = r * ks.size() + j;
                dp[idx] = p[idx] * (dp[idx] - delta[qs.begin + r]);
              }
            if (compute != DType::f32)
              for (int64_t idx = 0; idx < qs.size() * ks.size(); ++idx) {
                dp[idx] = round_to(dp[idx], compute);
                p[idx] = round_to(p[idx], compute);
              }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ks.size(), d.hs, qs.size(), 1.0f,
                        p.data(), ks.size(), go, d.c, 1.0f, dv, ld);
            // dq += scale · dS · k;  dk += scale · dSᵀ · q.
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qs.size(), d.hs, ks.size(),
                        scale, dp.data(), ks.size(), k, ld, 1.0f, dq, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ks.size(), d.hs, qs.size(), scale,
                        dp.data(), ks.size(), q, ld, 1.0f, dk, ld);
          }
        }
      }
  }
}

// x (qkv, dout, or out and so dqkv) is f32, or of the products' 16-bit type.
void check_input(const char* op, const char* name, const Tensor& x, const Tensor& like,
                 DType compute) {
  kernels_detail::check_float(op, name, x, like);
  TS_CHECK(x.dtype() == DType::f32 || x.dtype() == compute, op, ": ", name, " is ",
           dtype_name(x.dtype()),
           ": f32, or the type of the products (compute = ", dtype_name(compute), ")");
}

}  // namespace

void attention_forward(Tensor& out, Tensor& lse, const Tensor& qkv, int64_t num_heads,
                       DType compute) {
  const auto backend = backend_f32("attention_forward", {{"lse", lse}});
  check_gemm_compute(compute);
  check_input("attention_forward", "qkv", qkv, lse, compute);
  check_input("attention_forward", "out", out, lse, compute);
  const Dims d = check("attention_forward", qkv, num_heads);
  out.expect("attention_forward out", {d.b, d.t, d.c}, out.dtype());
  lse.expect("attention_forward lse", {d.b, d.nh, d.t}, DType::f32);
  kernels_detail::visit_float(out.dtype(), [&]<class Y>() {
    TS_RUN_ON_CUDA(backend, kernels_detail::visit_float(compute, [&]<class T>() {
                     if constexpr (std::is_same_v<T, float>)
                       cuda::attention_forward(out.data<float>(), lse.data<float>(),
                                               qkv.data<float>(), d.b, d.t, d.c, d.nh, kOpStream);
                     else if constexpr (std::is_same_v<Y, float> ||
                                        std::is_same_v<Y, T>)  // (check_input of out)
                       cuda::attention_forward_tc(out.data<Y>(), lse.data<float>(),
                                                  gemm_operand(qkv, compute).data<T>(), d.b, d.t,
                                                  d.c, d.nh, kOpStream);
                   }));
    forward_cpu(out.data<Y>(), lse.data<float>(), rounded_f32(qkv, compute).data<float>(), d,
                compute);
  });
}

void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& lse, int64_t num_heads, DType compute) {
  const auto backend = backend_f32("attention_backward", {{"lse", lse}});
  check_gemm_compute(compute);
  check_input("attention_backward", "qkv", qkv, lse, compute);
  check_input("attention_backward", "dout", dout, lse, compute);
  check_input("attention_backward", "out", out, lse, compute);
  kernels_detail::check_float("attention_backward", "dqkv", dqkv, lse);
  const Dims d = check("attention_backward", qkv, num_heads);
  dqkv.expect("attention_backward dqkv", qkv.shape(), out.dtype());
  dout.expect("attention_backward dout", {d.b, d.t, d.c}, dout.dtype());
  out.expect("attention_backward out", {d.b, d.t, d.c}, out.dtype());
  lse.expect("attention_backward lse", {d.b, d.nh, d.t}, DType::f32);
  kernels_detail::visit_float(out.dtype(), [&]<class Y>() {
    TS_RUN_ON_CUDA(
        backend, kernels_detail::visit_float(compute, [&]<class T>() {
          Tensor delta = Tensor::empty({d.b, d.nh, d.t}, DType::f32, qkv.device());
          if constexpr (std::is_same_v<T, float>)
            cuda::attention_backward(dqkv.data<float>(), delta.data<float>(), dout.data<float>(),
                                     qkv.data<float>(), out.data<float>(), lse.data<float>(), d.b,
                                     d.t, d.c, d.nh, kOpStream);
          else if constexpr (std::is_same_v<Y, float> || std::is_same_v<Y, T>) {
            Tensor dq_accum, turns;  // the fused dq's scratch, where it runs
            if (cuda::attention_dq_in_dkv(d.c / d.nh)) {
              dq_accum = Tensor::empty({d.b, d.t, d.c}, DType::f32, qkv.device());
              turns = Tensor::empty({cuda::attention_dq_turns(d.b, d.t, d.nh)}, DType::i32,
                                    qkv.device());
            }
            cuda::attention_backward_tc(dqkv.data<Y>(), delta.data<float>(),
                                        dq_accum.defined() ? dq_accum.data<float>() : nullptr,
                                        turns.defined() ? turns.data<int32_t>() : nullptr,
                                        gemm_operand(dout, compute).data<T>(),
                                        gemm_operand(qkv, compute).data<T>(), out.data<Y>(),
                                        lse.data<float>(), d.b, d.t, d.c, d.nh, kOpStream);
          }
        }));
    // A 16-bit dqkv: computed in f32 as the kernels accumulate it, then rounded once.
    Tensor dx = out.dtype() == DType::f32 ? dqkv : Tensor::empty(qkv.shape(), DType::f32);
    backward_cpu(dx.data<float>(), rounded_f32(qkv, compute).data<float>(),
                 rounded_f32(dout, compute).data<float>(), out.data<Y>(), lse.data<float>(), d,
                 compute);
    if (out.dtype() != DType::f32) convert(dqkv, dx);
  });
}

}  // namespace tessera
