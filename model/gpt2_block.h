// One GPT-2 transformer block (pre-LN):
//   r = x + c_proj(attn(c_attn(ln_1(x))));   y = r + mlp.c_proj(gelu(mlp.c_fc(ln_2(r)))).
// Explicit forward/backward: forward stores what backward needs in a BlockActivations the caller
// owns (one per micro-batch and layer, or one shared buffer when activations are recomputed).
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
// Tensor parallelism (parallel/tensor_parallel.h): with a tp group of N ranks, rank r holds heads
// [r·NH/N, (r+1)·NH/N) of c_attn (its q, k and v columns) and the matching rows of attn.c_proj,
// and columns [r·4C/N, (r+1)·4C/N) of mlp.c_fc with the matching rows of mlp.c_proj; layernorms
// and the c_proj biases are replicated. Forward all-reduces after each c_proj (g), backward
// before each layernorm's backward (f).
#pragma once

#include <string>

#include "core/parameters.h"
#include "parallel/communicator.h"

namespace tessera {

// The block's parameters and gradients: views into a ParameterSet.
struct BlockWeights {
  Tensor ln1_w, ln1_b;        // (C)
  Tensor attn_w, attn_b;      // (C, 3C), (3C)
  Tensor proj_w, proj_b;      // (C, C), (C)
  Tensor ln2_w, ln2_b;        // (C)
  Tensor fc_w, fc_b;          // (C, 4C), (4C)
  Tensor fcproj_w, fcproj_b;  // (4C, C), (C)

  // Registers tp rank `tp_rank` of `tp_size`'s part of the block's parameters as
  // "<prefix>.ln_1.weight", ... in GPT-2's naming.
  static void register_params(ParameterSet& params, const std::string& prefix, int64_t c,
                              int tp_rank = 0, int tp_size = 1, bool sequence_parallel = false);
  // Parameter views (grads = false) or gradient views (grads = true) of a registered block.
  static BlockWeights bind(const ParameterSet& params, const std::string& prefix, bool grads);
};

// The block's tensor-parallel group (null: one rank) and whether sequence parallelism splits the
// rows outside the parallel regions too (parallel/tensor_parallel.h).
struct BlockParallel {
  parallel::Communicator* tp = nullptr;
  bool sequence = false;
  int size() const { return tp ? tp->size() : 1; }
  bool sequence_split() const { return sequence && size() > 1; }
};

// What forward saves for backward, for one micro-batch of (B, T) tokens. With sequence
// parallelism the layernorm statistics and res1 hold this rank's B·T/tp rows only.
struct BlockActivations {
  Tensor ln1, ln1_mean, ln1_rstd;  // (B, T, C), (B·T), (B·T)
  Tensor qkv;                      // (B, T, 3C/tp)
  Tensor att, att_lse;             // (B, T, C/tp), (B, NH/tp, T)
  Tensor res1;                     // (B, T, C)  x + attention branch
  Tensor ln2, ln2_mean, ln2_rstd;  // (B, T, C), (B·T), (B·T)
  Tensor fc, fc_gelu;              // (B, T, 4C/tp)

  // ln1, qkv, att, ln2, fc and fc_gelu are read only by ops that round them to the products'
  // type (GEMMs, attention, GELU's gradient): they take `gemm_input`, f32 or the GEMMs' 16-bit
  // type (written rounded once instead of rounded by every reader; half the memory). The rest is
  // f32. Sequence parallelism keeps f32 (throws Error otherwise).
  static BlockActivations allocate(int64_t b, int64_t t, int64_t c, int64_t nh, Device device,
                                   const BlockParallel& par = {}, DType gemm_input = DType::f32);
};

// Scratch shared by all blocks of one backward pass (no state survives between calls).
struct BlockScratch {
  Tensor btc;    // (B, T, C): attention/MLP branch outputs in forward, gradients in backward
  Tensor dres1;  // (B, T, C), or this rank's rows with sequence parallelism
  Tensor dres1_rounded;  // (B, T, C) dres1 in the GEMMs' 16-bit type (undefined in f32)
  Tensor dln;            // (B, T, C)
  Tensor dqkv;           // (B, T, 3C/tp)
  Tensor dfc;   // (B, T, 4C/tp) ∂L/∂fc (from mlp.c_proj's backward with GELU's gradient in it);
                // its first B·T·C/tp elements also hold ∂L/∂att, before dfc is written
  Tensor rows;  // (B·T/tp, C): this rank's rows (sequence parallelism only)

  // dqkv and dfc are read by GEMMs (and their bias sums, and attention's backward) only: they take
  // `gemm_input` like BlockActivations' GEMM inputs; the rest is f32.
  static BlockScratch allocate(int64_t b, int64_t t, int64_t c, Device device,
                               const BlockParallel& par = {}, DType gemm_input = DType::f32);
};

// y (B, T, C) = block(x (B, T, C)); fills acts. num_heads counts this rank's heads. Collective
// over par.tp. With sequence parallelism x and y are this rank's (B·T/tp, C) rows. `gemm`: the
// type the linear layers' operands are rounded to (kernels/matmul.h: f32, or bf16 on CUDA).
void block_forward(Tensor& y, BlockActivations& acts, BlockScratch& scratch, const Tensor& x,
                   const BlockWeights& w, int64_t num_heads, const BlockParallel& par = {},
                   DType gemm = DType::f32);

// dx (B, T, C) = ∂L/∂x given dy (B, T, C); parameter gradients accumulate into g. dx may alias dy.
// Collective over par.tp; rows as in block_forward. With 16-bit GEMMs, dy_rounded holds dy rounded
// to their type: mlp.c_proj's GEMMs read it and its bias gradient sums it (undefined: the GEMMs
// round dy themselves, to the same bits, but the bias gradient sums dy's f32 values; Gpt2 always
// gives it). dx_rounded receives dx rounded so (may alias dy_rounded); the attention branch's
// c_proj reads dres1's copy likewise.
void block_backward(Tensor& dx, BlockWeights& g, BlockScratch& scratch, const Tensor& dy,
                    const Tensor& x, const BlockActivations& acts, const BlockWeights& w,
                    int64_t num_heads, const BlockParallel& par = {}, DType gemm = DType::f32,
                    const Tensor& dy_rounded = Tensor(), Tensor* dx_rounded = nullptr);

}  // namespace tessera
