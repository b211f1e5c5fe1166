// One GPT-2 transformer block (pre-LN):
//   r = x + c_proj(attn(c_attn(ln_1(x))));   y = r + mlp.c_proj(gelu(mlp.c_fc(ln_2(r)))).
// Explicit forward/backward: forward stores what backward needs in a BlockActivations the caller
// owns (one per micro-batch and layer, or one shared buffer when activations are recomputed).
// Parameter gradients accumulate (+=); activation gradients overwrite (=).
#pragma once

#include <string>

#include "core/parameters.h"

namespace tessera {

// The block's parameters and gradients: views into a ParameterSet.
struct BlockWeights {
  Tensor ln1_w, ln1_b;        // (C)
  Tensor attn_w, attn_b;      // (C, 3C), (3C)
  Tensor proj_w, proj_b;      // (C, C), (C)
  Tensor ln2_w, ln2_b;        // (C)
  Tensor fc_w, fc_b;          // (C, 4C), (4C)
  Tensor fcproj_w, fcproj_b;  // (4C, C), (C)

  // Registers the block's parameters as "<prefix>.ln_1.weight", ... in GPT-2's naming.
  static void register_params(ParameterSet& params, const std::string& prefix, int64_t c);
  // Parameter views (grads = false) or gradient views (grads = true) of a registered block.
  static BlockWeights bind(const ParameterSet& params, const std::string& prefix, bool grads);
};

// What forward saves for backward, for one micro-batch of (B, T) tokens.
struct BlockActivations {
  Tensor ln1, ln1_mean, ln1_rstd;  // (B, T, C), (B·T), (B·T)
  Tensor qkv;                      // (B, T, 3C)
  Tensor att, att_lse;             // (B, T, C), (B, NH, T)
  Tensor res1;                     // (B, T, C)  x + attention branch
  Tensor ln2, ln2_mean, ln2_rstd;  // (B, T, C), (B·T), (B·T)
  Tensor fc, fc_gelu;              // (B, T, 4C)

  static BlockActivations allocate(int64_t b, int64_t t, int64_t c, int64_t nh, Device device);
};

// Scratch shared by all blocks of one backward pass (no state survives between calls).
struct BlockScratch {
  Tensor btc;    // (B, T, C): attention/MLP branch outputs in forward, gradients in backward
  Tensor dres1;  // (B, T, C)
  Tensor dln;    // (B, T, C)
  Tensor dqkv;   // (B, T, 3C)
  Tensor dfc;    // (B, T, 4C)

  static BlockScratch allocate(int64_t b, int64_t t, int64_t c, Device device);
};

// y (B, T, C) = block(x (B, T, C)); fills acts.
void block_forward(Tensor& y, BlockActivations& acts, BlockScratch& scratch, const Tensor& x,
                   const BlockWeights& w, int64_t num_heads);

// dx (B, T, C) = ∂L/∂x given dy (B, T, C); parameter gradients accumulate into g. dx may alias dy.
void block_backward(Tensor& dx, BlockWeights& g, BlockScratch& scratch, const Tensor& dy,
                    const Tensor& x, const BlockActivations& acts, const BlockWeights& w,
                    int64_t num_heads);

}  // namespace tessera
