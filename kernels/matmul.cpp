#include "kernels/matmul.h"

#include <cblas.h>

#include <cstring>
#include <vector>

#include "kernels/convert.h"
#include "kernels/gelu.h"
#include "kernels/kernel_util.h"
#include "kernels/residual.h"

namespace tessera {
namespace {

using kernels_detail::backend_f32;
using kernels_detail::kOpStream;
using kernels_detail::kReduceChunks;

// Rows N and the (IC, OC) of weight, after checking that inp/out agree with it.
struct Dims {
  int64_t n, ic, oc;
};

Dims check_dims(const char* op, const Tensor& x, const char* xname, const Tensor& weight,
                int64_t x_cols_dim) {
  TS_CHECK_EQ(weight.dim(), 2, op, ": weight must be (in, out), got ", shape_str(weight.shape()));
  const int64_t ic = weight.size(0), oc = weight.size(1);
  const int64_t cols = x_cols_dim == 0 ? ic : oc;
  TS_CHECK(x.dim() >= 1 && x.size(-1) == cols, op, ": ", xname, " ", shape_str(x.shape()),
           " must end in ", cols, " for weight ", shape_str(weight.shape()));
  return {x.numel() / cols, ic, oc};
}

}  // namespace

void check_gemm_compute(DType compute) {
  TS_CHECK(compute == DType::f32 || compute == DType::bf16 || compute == DType::f16,
           "GEMMs compute in f32, bf16 or f16, not ", dtype_name(compute));
}

Tensor gemm_operand(const Tensor& x, DType compute) {
  check_gemm_compute(compute);
  if (x.dtype() == compute) return x;
  TS_CHECK(x.dtype() == DType::f32, "a GEMM operand of type ", dtype_name(x.dtype()),
           " cannot take part in a ", dtype_name(compute), " GEMM");
  Tensor r = Tensor::empty(x.shape(), compute, x.device());
  convert(r, x);
  return r;
}

namespace {

// inp (or dout) of a linear layer: f32, or already of the GEMM's 16-bit type (an activation or
// gradient stored so because only GEMMs read it).
void check_operand(const char* op, const char* name, const Tensor& t, const Tensor& like,
                   DType compute) {
  kernels_detail::check_float(op, name, t, like);
  TS_CHECK(t.dtype() == DType::f32 || t.dtype() == compute, op, ": ", name, " is ",
           dtype_name(t.dtype()), " but the GEMM computes in ", dtype_name(compute));
}

}  // namespace

namespace {

// y (N, OC) in f32 = the product of inp and weight rounded to `compute`, plus the bias rounded to
// `bias_type` (f32: as it is): the CPU's linear layer.
void linear_cpu(float* y, const Tensor& inp, const Tensor& weight, const Tensor& bias,
                const Dims& d, DType compute, DType bias_type) {
  float beta = 0.0f;
  if (bias.defined()) {
    const Tensor b_operand = rounded_f32(bias, bias_type);
    const float* b = b_operand.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < d.n; ++i) std::memcpy(y + i * d.oc, b, d.oc * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.n, d.oc, d.ic, 1.0f,
              rounded_f32(inp, compute).data<float>(), d.ic,
              rounded_f32(weight, compute).data<float>(), d.oc, beta, y, d.oc);
}

// The checks shared by the forward functions: where they run, and N, IC, OC.
struct ForwardCheck {
  kernels_detail::Backend backend;
  Dims d;
};
ForwardCheck check_forward(const char* op, const Tensor& out, const Tensor& inp,
                           const Tensor& weight, const Tensor& bias, DType compute) {
  check_gemm_compute(compute);
  check_operand(op, "weight", weight, weight, compute);
  const auto backend = kernels_detail::backend_of(weight);
  if (bias.defined()) kernels_detail::check_float(op, "bias", bias, weight);
  check_operand(op, "inp", inp, weight, compute);
  check_operand(op, "out", out, weight, compute);
  const Dims d = check_dims(op, inp, "inp", weight, 0);
  TS_CHECK_EQ(out.numel(), d.n * d.oc, op, ": out ", shape_str(out.shape()));
  if (bias.defined()) bias.expect("matmul bias", {d.oc}, DType::f32);
  return {backend, d};
}

// The bias as a cuBLASLt epilogue takes it: of the output's type.
Tensor bias_operand(const Tensor& bias, DType out) {
  return bias.defined() ? gemm_operand(bias, out) : Tensor();
}

}  // namespace

void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight, const Tensor& bias,
                    DType compute, const Tensor& residual) {
  const auto [backend, d] = check_forward("matmul_forward", out, inp, weight, bias, compute);
  const bool add = residual.defined();
  if (add) {
    backend_f32("matmul_forward", {{"out", out}, {"residual", residual}});
    TS_CHECK_EQ(residual.numel(), out.numel(), "matmul_forward: residual ",
                shape_str(residual.shape()));
    TS_CHECK(residual.raw() != out.raw(), "matmul_forward: out must not alias the residual");
  }
  const DType ot = out.dtype();
  TS_RUN_ON_CUDA(backend, {
    const Tensor b = bias_operand(bias, ot);
    cuda::gemm(out.raw(), gemm_operand(inp, compute).raw(), gemm_operand(weight, compute).raw(),
               b.defined() ? b.raw() : nullptr, d.n, d.oc, d.ic, false, false, add ? 1.0f : 0.0f,
               kOpStream, {compute, ot}, add ? residual.raw() : nullptr);
  });
  Tensor y = ot == DType::f32 ? out : Tensor::empty(out.shape(), DType::f32);
  linear_cpu(y.data<float>(), inp, weight, bias, d, compute, ot);
  if (add) residual_forward(out, residual, out);
  if (ot != DType::f32) convert(out, y);
}

void matmul_gelu_forward(Tensor& out, Tensor& pre, const Tensor& inp, const Tensor& weight,
                         const Tensor& bias, DType compute) {
  const auto [backend, d] = check_forward("matmul_gelu_forward", out, inp, weight, bias, compute);
  check_operand("matmul_gelu_forward", "pre", pre, weight, compute);
  TS_CHECK(pre.dtype() == out.dtype() && pre.numel() == out.numel(), "matmul_gelu_forward: pre ",
           dtype_name(pre.dtype()), shape_str(pre.shape()), " must be of out's type and size, ",
           dtype_name(out.dtype()), shape_str(out.shape()));
  const DType ot = out.dtype();
#ifdef TESSERA_WITH_CUDA
  if (backend == kernels_detail::Backend::cuda) {
    if (d.oc % 8 != 0) {  // cuBLASLt's GELU epilogue wants the aux rows a multiple of 8 long
      matmul_forward(pre, inp, weight, bias, compute);
      gelu_forward(out, pre);
      return;
    }
    const Tensor b = bias_operand(bias, ot);
    cuda::gemm(out.raw(), gemm_operand(inp, compute).raw(), gemm_operand(weight, compute).raw(),
               b.defined() ? b.raw() : nullptr, d.n, d.oc, d.ic, false, false, 0.0f, kOpStream,
               {compute, ot}, nullptr, cuda::GemmGelu::forward, pre.raw());
    return;
  }
#endif
  (void)backend;
  Tensor y = ot == DType::f32 ? pre : Tensor::empty(pre.shape(), DType::f32);
  linear_cpu(y.data<float>(), inp, weight, bias, d, compute, ot);
  gelu_forward(out, y);
  if (ot != DType::f32) convert(pre, y);
}

void matmul_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight, DType compute,
                     const Tensor& gelu_pre) {
  const auto backend = backend_f32("matmul_backward", {{"dweight", dweight}});
  check_gemm_compute(compute);
  check_operand("matmul_backward", "weight", weight, dweight, compute);
  check_operand("matmul_backward", "inp", inp, weight, compute);
  check_operand("matmul_backward", "dout", dout, weight, compute);
  const Dims d = check_dims("matmul_backward", dout, "dout", weight, 1);
  TS_CHECK_EQ(inp.numel(), d.n * d.ic, "matmul_backward: inp ", shape_str(inp.shape()));
  dweight.expect("matmul_backward dweight", weight.shape(), DType::f32);
  if (dinp.defined()) {
    check_operand("matmul_backward", "dinp", dinp, weight, compute);
    TS_CHECK_EQ(dinp.numel(), d.n * d.ic, "matmul_backward: dinp ", shape_str(dinp.shape()));
  }
  if (gelu_pre.defined()) {
    TS_CHECK(dinp.defined(), "matmul_backward: gelu_pre given without dinp");
    check_operand("matmul_backward", "gelu_pre", gelu_pre, weight, compute);
    TS_CHECK(gelu_pre.dtype() == DType::f32 || gelu_pre.dtype() == dinp.dtype(),
             "matmul_backward: gelu_pre is ", dtype_name(gelu_pre.dtype()), " but dinp ",
             dtype_name(dinp.dtype()), ": f32, or dinp's type");
    TS_CHECK_EQ(gelu_pre.numel(), dinp.numel(), "matmul_backward: gelu_pre ",
                shape_str(gelu_pre.shape()));
  }
  if (dbias.defined()) {
    backend_f32("matmul_backward", {{"dweight", dweight}, {"dbias", dbias}});
    dbias.expect("matmul_backward dbias", {d.oc}, DType::f32);
  }
#ifdef TESSERA_WITH_CUDA
  if (backend == kernels_detail::Backend::cuda) {
    const Tensor dy = gemm_operand(dout, compute);
    const cuda::GemmTypes types{compute, DType::f32};
    if (dinp.defined()) {  // dinp (N, IC) = dout (N, OC) · weight (IC, OC)ᵀ [∘ gelu'(gelu_pre)]
      const Tensor w = gemm_operand(weight, compute);
      const cuda::GemmTypes dinp_types{compute, dinp.dtype()};
      if (!gelu_pre.defined()) {
        cuda::gemm(dinp.raw(), dy.raw(), w.raw(), nullptr, d.n, d.ic, d.oc, false, true, 0.0f,
                   kOpStream, dinp_types);
      } else if (d.ic % 8 == 0 && gelu_pre.dtype() == dinp.dtype()) {
        cuda::gemm(dinp.raw(), dy.raw(), w.raw(), nullptr, d.n, d.ic, d.oc, false, true, 0.0f,
                   kOpStream, dinp_types, nullptr, cuda::GemmGelu::backward, gelu_pre.raw());
      } else {  // a size or type the epilogue does not take: the product, then GELU's gradient
        Tensor product = Tensor::empty(dinp.shape(), DType::f32, dinp.device());
        cuda::gemm(product.raw(), dy.raw(), w.raw(), nullptr, d.n, d.ic, d.oc, false, true, 0.0f,
                   kOpStream, types);
        gelu_backward(dinp, product, gelu_pre);
      }
    }
    // dweight (IC, OC) += inp (N, IC)ᵀ · dout (N, OC), and dbias (OC) += Σ dout in the same call
    // when dout is the operand as it is (the epilogue sums the operand) and cuBLASLt can
    const Tensor x = gemm_operand(inp, compute);
    if (dbias.defined() && dout.dtype() == compute) {
      Tensor sums = Tensor::empty({d.oc}, DType::f32, dout.device());
      if (cuda::gemm_bias_grad(dweight.data<float>(), dbias.data<float>(), sums.data<float>(),
                               x.raw(), dy.raw(), d.ic, d.oc, d.n, kOpStream, compute))
        return;
    }
    cuda::gemm(dweight.data<float>(), x.raw(), dy.raw(), nullptr, d.ic, d.oc, d.n, true, false,
               1.0f, kOpStream, types);
    if (dbias.defined()) {
      Tensor partials = Tensor::empty({cuda::kColumnChunks, d.oc}, DType::f32, dout.device());
      kernels_detail::visit_float(dout.dtype(), [&]<class D>() {
        cuda::column_sum(dbias.data<float>(), partials.data<float>(), dout.data<D>(), d.n, d.oc,
                         kOpStream);
      });
    }
    return;
  }
#endif
  (void)backend;
  const Tensor dy_operand = rounded_f32(dout, compute);
  const float* dy = dy_operand.data<float>();
  if (dinp.defined()) {
    Tensor dx = dinp.dtype() == DType::f32 ? dinp : Tensor::empty(dinp.shape(), DType::f32);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.n, d.ic, d.oc, 1.0f, dy, d.oc,
                rounded_f32(weight, compute).data<float>(), d.oc, 0.0f, dx.data<float>(), d.ic);
    if (gelu_pre.defined())
      gelu_backward(dinp, dx, gelu_pre);  // in place when dinp is f32
    else if (dinp.dtype() != DType::f32)
      convert(dinp, dx);
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.ic, d.oc, d.n, 1.0f,
              rounded_f32(inp, compute).data<float>(), d.ic, dy, d.oc, 1.0f, dweight.data<float>(),
              d.oc);
  if (dbias.defined()) {
    // Σ of dout as the CUDA column sums take it: f32 as it is, or the 16-bit values widened.
    const float* bias_rows = dout.dtype() == DType::f32 ? dout.data<float>() : dy;
    // Column sums in fixed row chunks, then an ordered reduction: deterministic for any threads.
    const int64_t chunks = std::min<int64_t>(kReduceChunks, std::max<int64_t>(d.n, 1));
    std::vector<float> partial(chunks * d.oc, 0.0f);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      float* acc = partial.data() + c * d.oc;
      for (int64_t i = c * d.n / chunks; i < (c + 1) * d.n / chunks; ++i) {
        const float* row = bias_rows + i * d.oc;
        for (int64_t j = 0; j < d.oc; ++j) acc[j] += row[j];
      }
    }
    float* db = dbias.data<float>();
    for (int64_t c = 0; c < chunks; ++c)
      for (int64_t j = 0; j < d.oc; ++j) db[j] += partial[c * d.oc + j];
  }
}

}  // namespace tessera
