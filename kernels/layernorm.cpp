#include "kernels/layernorm.h"

#include <cmath>
#include <vector>

#include "kernels/convert.h"
#include "kernels/kernel_util.h"

namespace tessera {
namespace {

using kernels_detail::backend_f32;
using kernels_detail::kOpStream;
using kernels_detail::kReduceChunks;

int64_t check(const char* op, const Tensor& x, const Tensor& weight, const Tensor& mean,
              const Tensor& rstd) {
  const int64_t c = weight.numel();
  TS_CHECK(x.dim() >= 1 && x.size(-1) == c, op, ": input ", shape_str(x.shape()),
           " must end in C = ", c);
  const int64_t n = x.numel() / c;
  mean.expect("layernorm mean", {n}, DType::f32);
  rstd.expect("layernorm rstd", {n}, DType::f32);
  return n;
}

// The rows of layernorm_forward; with `add` non-null each row is first x + add, stored to res and
// normalized from there (the same float operations as the two ops one after the other). Y: out's
// element type.
template <class Y>
void forward_rows(Y* y, float* mu, float* rs, float* res, const float* x, const float* add,
                  const float* w, const float* b, int64_t n, int64_t c) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * c;
    if (add) {
      float* ri = res + i * c;
      const float* ai = add + i * c;
      for (int64_t j = 0; j < c; ++j) ri[j] = xi[j] + ai[j];
      xi = ri;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < c; ++j) sum += xi[j];
    const float m = sum / c;
    float var = 0.0f;
    for (int64_t j = 0; j < c; ++j) var += (xi[j] - m) * (xi[j] - m);
    const float r = 1.0f / std::sqrt(var / c + kLayerNormEps);
    Y* yi = y + i * c;
    for (int64_t j = 0; j < c; ++j) kernels_detail::store(yi[j], (xi[j] - m) * r * w[j] + b[j]);
    mu[i] = m;
    rs[i] = r;
  }
}

// Both forward ops: checks, then the CPU rows or the CUDA launcher. res and add are undefined
// for the plain layernorm.
void forward(const char* op, Tensor& out, Tensor& mean, Tensor& rstd, Tensor* res,
             const Tensor& inp, const Tensor* add, const Tensor& weight, const Tensor& bias) {
  const auto backend = backend_f32(
      op, {{"mean", mean}, {"rstd", rstd}, {"inp", inp}, {"weight", weight}, {"bias", bias}});
  kernels_detail::check_float(op, "out", out, inp);
  const int64_t c = weight.numel();
  const int64_t n = check(op, inp, weight, mean, rstd);
  out.expect("layernorm out", inp.shape(), out.dtype());
  bias.expect("layernorm bias", weight.shape(), DType::f32);
  if (add) {
    backend_f32(op, {{"inp", inp}, {"res", *res}, {"b", *add}});
    res->expect("residual res", inp.shape(), DType::f32);
    add->expect("residual b", inp.shape(), DType::f32);
  }
  float* r = add ? res->data<float>() : nullptr;
  const float* a = add ? add->data<float>() : nullptr;
  kernels_detail::visit_float(out.dtype(), [&]<class Y>() {
    TS_RUN_ON_CUDA(backend,
                   cuda::layernorm_forward(out.data<Y>(), mean.data<float>(), rstd.data<float>(), r,
                                           inp.data<float>(), a, weight.data<float>(),
                                           bias.data<float>(), n, c, kOpStream));
    forward_rows(out.data<Y>(), mean.data<float>(), rstd.data<float>(), r, inp.data<float>(), a,
                 weight.data<float>(), bias.data<float>(), n, c);
  });
}

}  // namespace

void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias) {
  forward("layernorm_forward", out, mean, rstd, nullptr, inp, nullptr, weight, bias);
}

void residual_layernorm_forward(Tensor& res, Tensor& out, Tensor& mean, Tensor& rstd,
                                const Tensor& a, const Tensor& b, const Tensor& weight,
                                const Tensor& bias) {
  forward("residual_layernorm_forward", out, mean, rstd, &res, a, &b, weight, bias);
}

void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dresidual, Tensor* rounded) {
  const bool residual = dresidual.defined();
  const auto backend =
      backend_f32("layernorm_backward", {{"dinp", dinp},
                                         {"dresidual", residual ? dresidual : dinp},
                                         {"dweight", dweight},
                                         {"dbias", dbias},
                                         {"dout", dout},
                                         {"inp", inp},
                                         {"weight", weight},
                                         {"mean", mean},
                                         {"rstd", rstd}});
  const int64_t c = weight.numel();
  const int64_t n = check("layernorm_backward", inp, weight, mean, rstd);
  dinp.expect("layernorm_backward dinp", inp.shape(), DType::f32);
  dout.expect("layernorm_backward dout", inp.shape(), DType::f32);
  dweight.expect("layernorm_backward dweight", weight.shape(), DType::f32);
  dbias.expect("layernorm_backward dbias", weight.shape(), DType::f32);
  if (residual) dresidual.expect("layernorm_backward dresidual", inp.shape(), DType::f32);
  const float* dres = residual ? dresidual.data<float>() : nullptr;
  if (rounded) {
    kernels_detail::check_float("layernorm_backward", "rounded", *rounded, dinp);
    TS_CHECK(rounded->dtype() != DType::f32 && rounded->numel() == dinp.numel(),
             "layernorm_backward: rounded must be a bf16 or f16 copy of dinp's size, got ",
             dtype_name(rounded->dtype()), shape_str(rounded->shape()));
  }
  TS_RUN_ON_CUDA(backend, {
    Tensor partials = Tensor::empty({2 * cuda::kLayerNormChunks * c}, DType::f32, inp.device());
    kernels_detail::visit_float(rounded ? rounded->dtype() : DType::f32, [&]<class H>() {
      cuda::layernorm_backward(dinp.data<float>(), rounded ? rounded->data<H>() : nullptr,
                               dweight.data<float>(), dbias.data<float>(), partials.data<float>(),
                               dout.data<float>(), inp.data<float>(), weight.data<float>(),
                               mean.data<float>(), rstd.data<float>(), dres, n, c, kOpStream);
    });
  });
  const float* x = inp.data<float>();
  const float* dy = dout.data<float>();
  const float* w = weight.data<float>();
  const float* mu = mean.data<float>();
  const float* rs = rstd.data<float>();
  float* dx = dinp.data<float>();
  const int64_t chunks = std::min<int64_t>(kReduceChunks, std::max<int64_t>(n, 1));
  std::vector<float> partial(2 * chunks * c, 0.0f);  // per chunk: dweight then dbias
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    float* dw = partial.data() + 2 * ch * c;
    float* db = dw + c;
    std::vector<float> branch(dres ? c : 0);  // a row of the layernorm's own input gradient
    for (int64_t i = ch * n / chunks; i < (ch + 1) * n / chunks; ++i) {
      const float* xi = x + i * c;
      const float* dyi = dy + i * c;
      const float m = mu[i], r = rs[i];
      // dx = r * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w.
      float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
      for (int64_t j = 0; j < c; ++j) {
        const float xhat = (xi[j] - m) * r;
        const float dxhat = dyi[j] * w[j];
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
        dw[j] += dyi[j] * xhat;
        db[j] += dyi[j];
      }
      const float mean_dxhat = sum_dxhat / c, mean_dxhat_xhat = sum_dxhat_xhat / c;
      float* dxi = dx + i * c;
      // With the residual's gradient: the row into `branch` first, then the add in a loop of its
      // own, so that no FMA contraction makes it differ from the separate add.
      float* g = dres ? branch.data() : dxi;
      for (int64_t j = 0; j < c; ++j) {
        const float xhat = (xi[j] - m) * r;
        g[j] = r * (dyi[j] * w[j] - mean_dxhat - xhat * mean_dxhat_xhat);
      }
      if (dres)
        for (int64_t j = 0; j < c; ++j) dxi[j] = dres[i * c + j] + g[j];
    }
  }
  float* dw = dweight.data<float>();
  float* db = dbias.data<float>();
  for (int64_t ch = 0; ch < chunks; ++ch) {
    for (int64_t j = 0; j < c; ++j) {
      dw[j] += partial[2 * ch * c + j];
      db[j] += partial[(2 * ch + 1) * c + j];
    }
  }
  if (rounded) convert(*rounded, dinp);
}

}  // namespace tessera
