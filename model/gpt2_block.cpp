#include "model/gpt2_block.h"

#include "kernels/attention.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/residual.h"
#include "parallel/tensor_parallel.h"

namespace tessera {

void BlockWeights::register_params(ParameterSet& params, const std::string& prefix, int64_t c,
                                   int tp_rank, int tp_size) {
  const int64_t n = tp_size;
  const TpSplit cols{1, tp_size, tp_rank, 1}, qkv_cols{1, tp_size, tp_rank, 3};
  const TpSplit rows{0, tp_size, tp_rank, 1}, qkv_rows{0, tp_size, tp_rank, 3};
  params.add(prefix + ".ln_1.weight", {c}, false);
  params.add(prefix + ".ln_1.bias", {c}, false);
  params.add(prefix + ".attn.c_attn.weight", {c, 3 * c / n}, true, qkv_cols);  // column-parallel
  params.add(prefix + ".attn.c_attn.bias", {3 * c / n}, false, qkv_rows);
  params.add(prefix + ".attn.c_proj.weight", {c / n, c}, true, rows);  // row-parallel
  params.add(prefix + ".attn.c_proj.bias", {c}, false);
  params.add(prefix + ".ln_2.weight", {c}, false);
  params.add(prefix + ".ln_2.bias", {c}, false);
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
                                            Device device, int tp_size) {
  auto f32 = [&](const Shape& s) { return Tensor::empty(s, DType::f32, device); };
  const int64_t cl = c / tp_size, nhl = nh / tp_size;  // this rank's channels and heads
  return {f32({b, t, c}),  f32({b * t}),     f32({b * t}),        f32({b, t, 3 * cl}),
          f32({b, t, cl}), f32({b, nhl, t}), f32({b, t, c}),      f32({b, t, c}),
          f32({b * t}),    f32({b * t}),     f32({b, t, 4 * cl}), f32({b, t, 4 * cl})};
}

BlockScratch BlockScratch::allocate(int64_t b, int64_t t, int64_t c, Device device, int tp_size) {
  auto f32 = [&](const Shape& s) { return Tensor::empty(s, DType::f32, device); };
  const int64_t cl = c / tp_size;
  return {f32({b, t, c}), f32({b, t, c}), f32({b, t, c}), f32({b, t, 3 * cl}), f32({b, t, 4 * cl})};
}

namespace {

// A row-parallel layer's bias is added once, by tp rank 0, before the all-reduce (g).
Tensor bias_of_rank(const Tensor& bias, const parallel::Communicator* tp) {
  return tp == nullptr || tp->rank() == 0 ? bias : Tensor();
}

}  // namespace

void block_forward(Tensor& y, BlockActivations& a, BlockScratch& s, const Tensor& x,
                   const BlockWeights& w, int64_t num_heads, parallel::Communicator* tp) {
  layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_w, w.ln1_b);
  matmul_forward(a.qkv, a.ln1, w.attn_w, w.attn_b);  // column-parallel (f: identity)
  attention_forward(a.att, a.att_lse, a.qkv, num_heads);
  matmul_forward(s.btc, a.att, w.proj_w, bias_of_rank(w.proj_b, tp));  // row-parallel
  if (tp) parallel::tp_all_reduce(*tp, s.btc);                         // g
  residual_forward(a.res1, x, s.btc);
  layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res1, w.ln2_w, w.ln2_b);
  matmul_forward(a.fc, a.ln2, w.fc_w, w.fc_b);  // column-parallel (f: identity)
  gelu_forward(a.fc_gelu, a.fc);
  matmul_forward(s.btc, a.fc_gelu, w.fcproj_w, bias_of_rank(w.fcproj_b, tp));  // row-parallel
  if (tp) parallel::tp_all_reduce(*tp, s.btc);                                 // g
  residual_forward(y, a.res1, s.btc);
}

void block_backward(Tensor& dx, BlockWeights& g, BlockScratch& s, const Tensor& dy, const Tensor& x,
                    const BlockActivations& a, const BlockWeights& w, int64_t num_heads,
                    parallel::Communicator* tp) {
  // MLP branch: y = res1 + fcproj(gelu(fc(ln2(res1)))); ∂L/∂(branch output) is dy itself (g's
  // backward is the identity, and the replicated bias gets the full gradient on every rank).
  matmul_backward(s.dfc, g.fcproj_w, g.fcproj_b, dy, a.fc_gelu, w.fcproj_w);
  gelu_backward(s.dfc, s.dfc, a.fc);
  matmul_backward(s.dln, g.fc_w, g.fc_b, s.dfc, a.ln2, w.fc_w);
  if (tp) parallel::tp_all_reduce(*tp, s.dln);  // f: this rank's columns' share of dln2
  layernorm_backward(s.btc, g.ln2_w, g.ln2_b, s.dln, a.res1, w.ln2_w, a.ln2_mean, a.ln2_rstd);
  residual_backward(s.dres1, dy, s.btc);
  // Attention branch: res1 = x + proj(attn(c_attn(ln1(x)))). datt (B, T, C/tp) borrows dln.
  Tensor datt = s.dln.carve(0, a.att.shape());
  matmul_backward(datt, g.proj_w, g.proj_b, s.dres1, a.att, w.proj_w);
  attention_backward(s.dqkv, datt, a.qkv, a.att, a.att_lse, num_heads);
  matmul_backward(s.dln, g.attn_w, g.attn_b, s.dqkv, a.ln1, w.attn_w);
  if (tp) parallel::tp_all_reduce(*tp, s.dln);  // f
  layernorm_backward(s.btc, g.ln1_w, g.ln1_b, s.dln, x, w.ln1_w, a.ln1_mean, a.ln1_rstd);
  residual_backward(dx, s.dres1, s.btc);
}

}  // namespace tessera
