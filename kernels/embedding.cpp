#include "kernels/embedding.h"

#include "kernels/kernel_util.h"

namespace tessera {
namespace {

using kernels_detail::require_cpu_f32;

void check_tokens(const Tensor& tokens, int64_t vocab, int64_t max_t) {
  TS_CHECK(tokens.dtype() == DType::i32 && tokens.dim() == 2 && tokens.is_cpu(),
           "embedding: tokens must be (B, T) i32 on cpu, got ", shape_str(tokens.shape()), " ",
           dtype_name(tokens.dtype()));
  TS_CHECK_LE(tokens.size(1), max_t, "embedding: sequence longer than model.max_seq_len");
  const int32_t* tok = tokens.data<int32_t>();
  for (int64_t i = 0; i < tokens.numel(); ++i)
    TS_CHECK(tok[i] >= 0 && tok[i] < vocab, "embedding: token ", tok[i], " at position ", i,
             " is outside the vocabulary [0, ", vocab, ")");
}

// wte (V, C) and wpe (maxT, C) must share C: rows of both are read (or written) C wide.
void check_tables(const char* op, const Tensor& wte, const Tensor& wpe) {
  TS_CHECK(wte.dim() == 2 && wpe.dim() == 2 && wte.size(1) == wpe.size(1), op, ": wte ",
           shape_str(wte.shape()), " and wpe ", shape_str(wpe.shape()),
           " must be (V, C) and (maxT, C) with the same C");
}

}  // namespace

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) {
  require_cpu_f32("embedding_forward", "out", out);
  require_cpu_f32("embedding_forward", "wte", wte);
  require_cpu_f32("embedding_forward", "wpe", wpe);
  check_tables("embedding_forward", wte, wpe);
  const int64_t v = wte.size(0), c = wte.size(1);
  check_tokens(tokens, v, wpe.size(0));
  const int64_t b = tokens.size(0), t = tokens.size(1);
  out.expect("embedding_forward out", {b, t, c}, DType::f32);
  const int32_t* tok = tokens.data<int32_t>();
  const float* e = wte.data<float>();
  const float* p = wpe.data<float>();
  float* y = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < b * t; ++i) {
    const float* ei = e + static_cast<int64_t>(tok[i]) * c;
    const float* pi = p + (i % t) * c;
    float* yi = y + i * c;
    for (int64_t j = 0; j < c; ++j) yi[j] = ei[j] + pi[j];
  }
}

void embedding_backward(Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens) {
  require_cpu_f32("embedding_backward", "dwte", dwte);
  require_cpu_f32("embedding_backward", "dwpe", dwpe);
  require_cpu_f32("embedding_backward", "dout", dout);
  check_tables("embedding_backward", dwte, dwpe);
  const int64_t v = dwte.size(0), c = dwte.size(1);
  check_tokens(tokens, v, dwpe.size(0));
  const int64_t b = tokens.size(0), t = tokens.size(1);
  dout.expect("embedding_backward dout", {b, t, c}, DType::f32);
  const int32_t* tok = tokens.data<int32_t>();
  const float* dy = dout.data<float>();
  float* de = dwte.data<float>();
  float* dp = dwpe.data<float>();
  // Each thread owns a slice of channels and walks all positions in order: no races, and the
  // summation order is fixed, so the result is deterministic.
  constexpr int64_t kSlice = 16;
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < c; j0 += kSlice) {
    const int64_t j1 = std::min(c, j0 + kSlice);
    for (int64_t i = 0; i < b * t; ++i) {
      const float* dyi = dy + i * c;
      float* dei = de + static_cast<int64_t>(tok[i]) * c;
      float* dpi = dp + (i % t) * c;
      for (int64_t j = j0; j < j1; ++j) {
        dei[j] += dyi[j];
        dpi[j] += dyi[j];
      }
    }
  }
}

}  // namespace tessera
