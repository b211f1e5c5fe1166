#include "model/gpt2_block.h"

#include "kernels/attention.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"
#include "parallel/tensor_parallel.h"

namespace tessera {

void BlockWeights::register_params(ParameterSet& params, const std::string& prefix, int64_t c,
                                   int tp_rank, int tp_size, bool sequence_parallel) {
  const int64_t n = tp_size;
  const TpSplit cols{1, tp_size, tp_rank, 1}, qkv_cols{1, tp_size, tp_rank, 3};
  const TpSplit rows{0, tp_size, tp_rank, 1}, qkv_rows{0, tp_size, tp_rank, 3};
  const bool partial = sequence_parallel && tp_size > 1;  // layernorms see this rank's rows only
  params.add(prefix + ".ln_1.weight", {c}, false, {}, partial);
  params.add(prefix + ".ln_1.bias", {c}, false, {}, partial);
  params.add(prefix + ".attn.c_attn.weight", {c, 3 * c / n}, true, qkv_cols);  // column-parallel
  params.add(prefix + ".attn.c_attn.bias", {3 * c / n}, false, qkv_rows);
  params.add(prefix + ".attn.c_proj.weight", {c / n, c}, true, rows);  // row-parallel
  params.add(prefix + ".attn.c_proj.bias", {c}, false);
  params.add(prefix + ".ln_2.weight", {c}, false, {}, partial);
  params.add(prefix + ".ln_2.bias", {c}, false, {}, partial);
  params.add(prefix + ".mlp.c_fc.weight", {c, 4 * c / n}, true, cols);  // column-parallel
  params.add(prefix + ".mlp.c_fc.bias", {4 * c / n}, false, rows);
  params.add(prefix + ".mlp.c_proj.weight", {4 * c / n, c}, true, rows);  // row-parallel
  params.add(prefix + ".mlp.c_proj.bias", {c}, false);
}

BlockWeights BlockWeights::bind(const ParameterSet& params, const std::string& prefix, bool grads) {
  auto get = [&](const char* name) {
    const ParameterEntry& e = params.entry(prefix + name);
    return grads ? params.grad(e) : params.param(e);
  };
  return {get(".ln_1.weight"),      get(".ln_1.bias"),          get(".attn.c_attn.weight"),
          get(".attn.c_attn.bias"), get(".attn.c_proj.weight"), get(".attn.c_proj.bias"),
          get(".ln_2.weight"),      get(".ln_2.bias"),          get(".mlp.c_fc.weight"),
          get(".mlp.c_fc.bias"),    get(".mlp.c_proj.weight"),  get(".mlp.c_proj.bias")};
}

BlockActivations BlockActivations::allocate(int64_t b, int64_t t, int64_t c, int64_t nh,
                                            Device device, const BlockParallel& par,
                                            DType gemm_input) {
  auto f32 = [&](const Shape& s) { return Tensor::empty(s, DType::f32, device); };
  auto in = [&](const Shape& s) { return Tensor::empty(s, gemm_input, device); };
  const int n = par.size();
  const int64_t cl = c / n, nhl = nh / n;                         // this rank's channels, heads
  const int64_t rows = par.sequence_split() ? b * t / n : b * t;  // and rows
  const Shape stream = par.sequence_split() ? Shape{rows, c} : Shape{b, t, c};
  TS_CHECK(gemm_input == DType::f32 || !par.sequence_split(),
           "16-bit GEMM inputs are not built with sequence parallelism (its all-gathers are f32)");
  return {in({b, t, c}),  f32({rows}),      f32({rows}),        in({b, t, 3 * cl}),
          in({b, t, cl}), f32({b, nhl, t}), f32(stream),        in({b, t, c}),
          f32({rows}),    f32({rows}),      in({b, t, 4 * cl}), in({b, t, 4 * cl})};
}

BlockScratch BlockScratch::allocate(int64_t b, int64_t t, int64_t c, Device device,
                                    const BlockParallel& par, DType gemm_input) {
  auto f32 = [&](const Shape& s) { return Tensor::empty(s, DType::f32, device); };
  auto in = [&](const Shape& s) { return Tensor::empty(s, gemm_input, device); };
  const int n = par.size();
  const int64_t cl = c / n;
  TS_CHECK(gemm_input == DType::f32 || !par.sequence_split(),
           "16-bit GEMM inputs are not built with sequence parallelism (its all-gathers are f32)");
  BlockScratch s{f32({b, t, c}),     f32({b, t, c}),     Tensor(), f32({b, t, c}),
                 in({b, t, 3 * cl}), in({b, t, 4 * cl}), Tensor()};
  if (gemm_input != DType::f32) s.dres1_rounded = in({b, t, c});
  if (par.sequence_split()) {
    s.dres1 = f32({b * t / n, c});
    s.rows = f32({b * t / n, c});
  }
  return s;
}

namespace {

// A row-parallel layer's bias is added once, by tp rank 0, before the all-reduce (g).
Tensor bias_of_rank(const Tensor& bias, const parallel::Communicator* tp) {
  return tp == nullptr || tp->rank() == 0 ? bias : Tensor();
}

// Sequence parallelism: the same block with the rows split outside the parallel regions. f is
// an all-gather of rows, g a reduce-scatter (then the row-parallel bias on every rank's rows).
void block_forward_sp(Tensor& y, BlockActivations& a, BlockScratch& s, const Tensor& x,
                      const BlockWeights& w, int64_t num_heads, parallel::Communicator& tp,
                      DType gemm) {
  layernorm_forward(s.rows, a.ln1_mean, a.ln1_rstd, x, w.ln1_w, w.ln1_b);
  parallel::sp_all_gather(tp, a.ln1, s.rows);  // f
  matmul_forward(a.qkv, a.ln1, w.attn_w, w.attn_b, gemm);
  attention_forward(a.att, a.att_lse, a.qkv, num_heads, gemm);
  matmul_forward(s.btc, a.att, w.proj_w, Tensor(), gemm);
  parallel::sp_reduce_scatter(tp, s.rows, s.btc);  // g
  bias_add(s.rows, w.proj_b);
  residual_layernorm_forward(a.res1, s.rows, a.ln2_mean, a.ln2_rstd, x, s.rows, w.ln2_w, w.ln2_b);
  parallel::sp_all_gather(tp, a.ln2, s.rows);  // f
  matmul_gelu_forward(a.fc_gelu, a.fc, a.ln2, w.fc_w, w.fc_b, gemm);
  matmul_forward(s.btc, a.fc_gelu, w.fcproj_w, Tensor(), gemm);
  parallel::sp_reduce_scatter(tp, s.rows, s.btc);  // g
  bias_add(s.rows, w.fcproj_b);
  residual_forward(y, a.res1, s.rows);
}

void block_backward_sp(Tensor& dx, BlockWeights& g, BlockScratch& s, const Tensor& dy,
                       const Tensor& x, const BlockActivations& a, const BlockWeights& w,
                       int64_t num_heads, parallel::Communicator& tp, DType gemm) {
  // MLP branch: g's backward gathers dy's rows, so the biases' gradients come from all rows.
  parallel::sp_all_gather(tp, s.btc, dy);
  matmul_backward(s.dfc, g.fcproj_w, g.fcproj_b, s.btc, a.fc_gelu, w.fcproj_w, gemm, a.fc);
  matmul_backward(s.dln, g.fc_w, g.fc_b, s.dfc, a.ln2, w.fc_w, gemm);
  parallel::sp_reduce_scatter(tp, s.rows, s.dln);  // f's backward
  layernorm_backward(s.dres1, g.ln2_w, g.ln2_b, s.rows, a.res1, w.ln2_w, a.ln2_mean, a.ln2_rstd,
                     dy);
  // Attention branch.
  parallel::sp_all_gather(tp, s.btc, s.dres1);
  Tensor datt = s.dfc.carve(0, a.att.shape());
  matmul_backward(datt, g.proj_w, g.proj_b, s.btc, a.att, w.proj_w, gemm);
  attention_backward(s.dqkv, datt, a.qkv, a.att, a.att_lse, num_heads, gemm);
  matmul_backward(s.dln, g.attn_w, g.attn_b, s.dqkv, a.ln1, w.attn_w, gemm);
  parallel::sp_reduce_scatter(tp, s.rows, s.dln);  // f's backward
  layernorm_backward(dx, g.ln1_w, g.ln1_b, s.rows, x, w.ln1_w, a.ln1_mean, a.ln1_rstd, s.dres1);
}

}  // namespace

void block_forward(Tensor& y, BlockActivations& a, BlockScratch& s, const Tensor& x,
                   const BlockWeights& w, int64_t num_heads, const BlockParallel& par, DType gemm) {
  if (par.sequence_split()) {
    block_forward_sp(y, a, s, x, w, num_heads, *par.tp, gemm);
    return;
  }
  parallel::Communicator* tp = par.tp;
  layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_w, w.ln1_b);
  matmul_forward(a.qkv, a.ln1, w.attn_w, w.attn_b, gemm);  // column-parallel (f: identity)
  attention_forward(a.att, a.att_lse, a.qkv, num_heads, gemm);
  matmul_forward(s.btc, a.att, w.proj_w, bias_of_rank(w.proj_b, tp), gemm);  // row-parallel
  if (tp) parallel::tp_all_reduce(*tp, s.btc);                               // g
  residual_layernorm_forward(a.res1, a.ln2, a.ln2_mean, a.ln2_rstd, x, s.btc, w.ln2_w, w.ln2_b);
  matmul_gelu_forward(a.fc_gelu, a.fc, a.ln2, w.fc_w, w.fc_b, gemm);  // column-parallel (f: id.)
  if (!tp) {  // y = res1 + c_proj(...) in the GEMM
    matmul_forward(y, a.fc_gelu, w.fcproj_w, w.fcproj_b, gemm, a.res1);
    return;
  }
  matmul_forward(s.btc, a.fc_gelu, w.fcproj_w, bias_of_rank(w.fcproj_b, tp), gemm);  // row-parallel
  parallel::tp_all_reduce(*tp, s.btc);                                               // g
  residual_forward(y, a.res1, s.btc);
}

void block_backward(Tensor& dx, BlockWeights& g, BlockScratch& s, const Tensor& dy, const Tensor& x,
                    const BlockActivations& a, const BlockWeights& w, int64_t num_heads,
                    const BlockParallel& par, DType gemm, const Tensor& dy_rounded,
                    Tensor* dx_rounded) {
  if (par.sequence_split()) {
    TS_CHECK(!dy_rounded.defined() && dx_rounded == nullptr,
             "block_backward: sequence parallelism keeps its gradients in f32 (no 16-bit copies)");
    block_backward_sp(dx, g, s, dy, x, a, w, num_heads, *par.tp, gemm);
    return;
  }
  parallel::Communicator* tp = par.tp;
  // MLP branch: y = res1 + fcproj(gelu(fc(ln2(res1)))); ∂L/∂(branch output) is dy itself (g's
  // backward is the identity, and the replicated bias gets the full gradient on every rank).
  matmul_backward(s.dfc, g.fcproj_w, g.fcproj_b, dy_rounded.defined() ? dy_rounded : dy, a.fc_gelu,
                  w.fcproj_w, gemm, a.fc);
  matmul_backward(s.dln, g.fc_w, g.fc_b, s.dfc, a.ln2, w.fc_w, gemm);
  if (tp) parallel::tp_all_reduce(*tp, s.dln);  // f: this rank's columns' share of dln2
  const bool rounded = s.dres1_rounded.defined();
  layernorm_backward(s.dres1, g.ln2_w, g.ln2_b, s.dln, a.res1, w.ln2_w, a.ln2_mean, a.ln2_rstd, dy,
                     rounded ? &s.dres1_rounded : nullptr);  // + the residual's gradient
  // Attention branch: res1 = x + proj(attn(c_attn(ln1(x)))). datt (B, T, C/tp) borrows dfc.
  Tensor datt = s.dfc.carve(0, a.att.shape());
  matmul_backward(datt, g.proj_w, g.proj_b, rounded ? s.dres1_rounded : s.dres1, a.att, w.proj_w,
                  gemm);
  attention_backward(s.dqkv, datt, a.qkv, a.att, a.att_lse, num_heads, gemm);
  matmul_backward(s.dln, g.attn_w, g.attn_b, s.dqkv, a.ln1, w.attn_w, gemm);
  if (tp) parallel::tp_all_reduce(*tp, s.dln);  // f
  layernorm_backward(dx, g.ln1_w, g.ln1_b, s.dln, x, w.ln1_w, a.ln1_mean, a.ln1_rstd, s.dres1,
                     dx_rounded);
}

}  // namespace tessera
