// Tensor parallelism (Megatron-LM, Shoeybi et al. 2019). Inside a transformer block:
//   column-parallel  Y_i = X · A_i        A split by columns; X the same on every tp rank
//   row-parallel     Y   = Σ_i X_i · A_i  A split by rows; X_i the output of a column-parallel
//   layer
// with the conjugate mappings around them (tensor_parallel/mappings.py):
//   f  before a column-parallel layer: forward identity,   backward all-reduce over tp
//   g  after a row-parallel layer:     forward all-reduce, backward identity
// Attention heads and the MLP's hidden units are split the same way, so a block needs two
// all-reduces forward (g after attn.c_proj and mlp.c_proj) and two backward (f before c_attn and
// mlp.c_fc). The vocabulary is split too: wte rows (embedding and LM head), with the softmax's
// max and sum all-reduced across ranks, so full logits never exist on any rank.
#pragma once

#include "core/parameters.h"
#include "parallel/communicator.h"

namespace tessera::parallel {

// Sequence parallelism (Korthikanti et al. 2022), optional: outside the column/row-parallel
// regions each tp rank keeps rows [r·N/tp, (r+1)·N/tp) of the (N = B·T, C) residual stream, so
// layernorms, residuals and the activations between blocks are split too. f becomes an
// all-gather of rows (backward: reduce-scatter), g a reduce-scatter of rows (backward:
// all-gather); layernorm gradients are then partial sums over tp (ParameterEntry::tp_partial).

// full (N, C) = the rows of every tp rank in rank order; local (N/tp, C). In place is not allowed.
inline void sp_all_gather(Communicator& tp, const Tensor& full, const Tensor& local) {
  tp.all_gather(full.view({full.numel()}), local.view({local.numel()}));
}
// local (N/tp, C) = this rank's rows of Σ over tp of full (N, C).
inline void sp_reduce_scatter(Communicator& tp, const Tensor& local, const Tensor& full) {
  tp.reduce_scatter(local.view({local.numel()}), full.view({full.numel()}), ReduceOp::sum);
}

// f's backward and g's forward: t = Σ over the tp group, in place (nothing on one rank).
inline void tp_all_reduce(Communicator& tp, const Tensor& t) {
  tp.all_reduce(t, ReduceOp::sum);
}

// The shape of this rank's part of a `full_shape` tensor cut by `split`. Throws Error when the
// cut dimension does not divide into blocks · parts.
Shape tp_local_shape(const Shape& full_shape, const TpSplit& split);

// The full shape of a tensor whose part `local_shape` was cut by `split`.
Shape tp_full_shape(const Shape& local_shape, const TpSplit& split);

// This rank's part of `full` (f32, cpu), cut by split: a new tensor of tp_local_shape.
Tensor tp_cut(const Tensor& full, const TpSplit& split);

// The full tensor (f32, cpu) of `full_shape` from the parts of every rank laid one after another
// in rank order (what all_gather of the parts gives); split.index is ignored.
Tensor tp_join(const Tensor& parts, const TpSplit& split, const Shape& full_shape);

}  // namespace tessera::parallel
