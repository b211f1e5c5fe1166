#include "kernels/embedding.h"

#include <algorithm>
#include <vector>

#include "kernels/kernel_util.h"

namespace tessera {
namespace {

using kernels_detail::Backend;
using kernels_detail::backend_f32;
using kernels_detail::kOpStream;

// tokens (B, T) i32 on `device`, each in [0, vocab) (checked on a host copy for a CUDA tensor).
// Returns the tokens on the host.
Tensor check_tokens(const Tensor& tokens, Device device, int64_t vocab, int64_t max_t) {
  TS_CHECK(tokens.dtype() == DType::i32 && tokens.dim() == 2 && tokens.device() == device,
           "embedding: tokens must be (B, T) i32 on ", device.str(), ", got ",
           shape_str(tokens.shape()), " ", dtype_name(tokens.dtype()), " on ",
           tokens.device().str());
  TS_CHECK_LE(tokens.size(1), max_t, "embedding: sequence longer than model.max_seq_len");
  const Tensor host = tokens.is_cpu() ? tokens : tokens.to(Device::cpu());
  const int32_t* tok = host.data<int32_t>();
  for (int64_t i = 0; i < tokens.numel(); ++i)
    TS_CHECK(tok[i] >= 0 && tok[i] < vocab, "embedding: token ", tok[i], " at position ", i,
             " is outside the vocabulary [0, ", vocab, ")");
  return host;
}

#ifdef TESSERA_WITH_CUDA
// The positions of each of wte's rows [start, start + rows) that occur in the tokens, grouped by
// row in increasing position order, packed into one i32 tensor on `device` as cuda::
// embedding_backward takes them: group rows (g), offsets (g + 1), positions.
Tensor group_positions(const Tensor& host_tokens, int64_t start, int64_t rows, Device device,
                       int64_t& groups) {
  const int32_t* tok = host_tokens.data<int32_t>();
  const int64_t n = host_tokens.numel();
  std::vector<int32_t> count(rows, 0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = tok[i] - start;
    if (r >= 0 && r < rows) ++count[r];
  }
  std::vector<int32_t> group_rows, offsets{0}, first(rows, -1);
  for (int64_t r = 0; r < rows; ++r)
    if (count[r] > 0) {
      first[r] = offsets.back();
      group_rows.push_back(static_cast<int32_t>(r));
      offsets.push_back(offsets.back() + count[r]);
    }
  std::vector<int32_t> positions(offsets.back());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = tok[i] - start;
    if (r >= 0 && r < rows) positions[first[r]++] = static_cast<int32_t>(i);
  }
  groups = static_cast<int64_t>(group_rows.size());
  Tensor packed =
      Tensor::empty({groups + static_cast<int64_t>(offsets.size() + positions.size())}, DType::i32);
  int32_t* p = packed.data<int32_t>();
  p = std::copy(group_rows.begin(), group_rows.end(), p);
  p = std::copy(offsets.begin(), offsets.end(), p);
  std::copy(positions.begin(), positions.end(), p);
  return packed.to(device);
}
#endif

// wte (V, C) and wpe (maxT, C) must share C: rows of both are read (or written) C wide.
void check_tables(const char* op, const Tensor& wte, const Tensor& wpe) {
  TS_CHECK(wte.dim() == 2 && (!wpe.defined() || (wpe.dim() == 2 && wte.size(1) == wpe.size(1))), op,
           ": wte ", shape_str(wte.shape()), " and wpe ",
           wpe.defined() ? shape_str(wpe.shape()) : "(none)",
           " must be (V, C) and (maxT, C) with the same C");
}

// The vocabulary the tokens index (vocab_size, or wte's rows) and that wte holds a slice of it.
int64_t full_vocab(const char* op, const Tensor& wte, int64_t vocab_start, int64_t vocab_size) {
  const int64_t v = vocab_size > 0 ? vocab_size : wte.size(0);
  TS_CHECK(vocab_start >= 0 && vocab_start + wte.size(0) <= v, op, ": wte rows [", vocab_start,
           ", ", vocab_start + wte.size(0), ") outside the vocabulary [0, ", v, ")");
  return v;
}

}  // namespace

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& wte, const Tensor& wpe,
                       int64_t vocab_start, int64_t vocab_size) {
  const Backend backend =
      wpe.defined() ? backend_f32("embedding_forward", {{"out", out}, {"wte", wte}, {"wpe", wpe}})
                    : backend_f32("embedding_forward", {{"out", out}, {"wte", wte}});
  check_tables("embedding_forward", wte, wpe);
  const int64_t rows = wte.size(0), c = wte.size(1);
  const int64_t v = full_vocab("embedding_forward", wte, vocab_start, vocab_size);
  check_tokens(tokens, out.device(), v, wpe.defined() ? wpe.size(0) : tokens.size(1));
  const int64_t b = tokens.size(0), t = tokens.size(1);
  out.expect("embedding_forward out", {b, t, c}, DType::f32);
  TS_RUN_ON_CUDA(
      backend, cuda::embedding_forward(out.data<float>(), tokens.data<int32_t>(), wte.data<float>(),
                                       wpe.defined() ? wpe.data<float>() : nullptr, b, t, c,
                                       vocab_start, rows, kOpStream));
  const int32_t* tok = tokens.data<int32_t>();
  const float* e = wte.data<float>();
  const float* p = wpe.defined() ? wpe.data<float>() : nullptr;
  float* y = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < b * t; ++i) {
    const int64_t row = tok[i] - vocab_start;
    const float* ei = row >= 0 && row < rows ? e + row * c : nullptr;
    const float* pi = p ? p + (i % t) * c : nullptr;
    float* yi = y + i * c;
    for (int64_t j = 0; j < c; ++j) yi[j] = (ei ? ei[j] : 0.0f) + (pi ? pi[j] : 0.0f);
  }
}

void embedding_backward(Tensor& dwte, Tensor& dwpe, const Tensor& dout, const Tensor& tokens,
                        int64_t vocab_start, int64_t vocab_size) {
  const Backend backend =
      dwpe.defined()
          ? backend_f32("embedding_backward", {{"dout", dout}, {"dwte", dwte}, {"dwpe", dwpe}})
          : backend_f32("embedding_backward", {{"dout", dout}, {"dwte", dwte}});
  check_tables("embedding_backward", dwte, dwpe);
  const int64_t rows = dwte.size(0), c = dwte.size(1);
  const int64_t v = full_vocab("embedding_backward", dwte, vocab_start, vocab_size);
  const Tensor host_tokens =
      check_tokens(tokens, dout.device(), v, dwpe.defined() ? dwpe.size(0) : tokens.size(1));
  const int64_t b = tokens.size(0), t = tokens.size(1);
  dout.expect("embedding_backward dout", {b, t, c}, DType::f32);
  TS_RUN_ON_CUDA(backend, {
    int64_t groups = 0;
    const Tensor packed = group_positions(host_tokens, vocab_start, rows, dout.device(), groups);
    const int32_t* group_rows = packed.data<int32_t>();
    cuda::embedding_backward(dwte.data<float>(), dwpe.defined() ? dwpe.data<float>() : nullptr,
                             dout.data<float>(), group_rows, group_rows + groups,
                             group_rows + 2 * groups + 1, groups, b, t, c, kOpStream);
  });
  const int32_t* tok = host_tokens.data<int32_t>();
  const float* dy = dout.data<float>();
  float* de = dwte.data<float>();
  float* dp = dwpe.defined() ? dwpe.data<float>() : nullptr;
  // Each thread owns a slice of channels and walks all positions in order: no races, and the
  // summation order is fixed, so the result is deterministic.
  constexpr int64_t kSlice = 16;
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < c; j0 += kSlice) {
    const int64_t j1 = std::min(c, j0 + kSlice);
    for (int64_t i = 0; i < b * t; ++i) {
      const float* dyi = dy + i * c;
      const int64_t row = tok[i] - vocab_start;
      if (row >= 0 && row < rows) {
        float* dei = de + row * c;
        for (int64_t j = j0; j < j1; ++j) dei[j] += dyi[j];
      }
      if (dp) {
        float* dpi = dp + (i % t) * c;
        for (int64_t j = j0; j < j1; ++j) dpi[j] += dyi[j];
      }
    }
  }
}

}  // namespace tessera
