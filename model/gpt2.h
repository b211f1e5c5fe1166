// GPT-2 (pre-LN, learned positions, tied input/output embeddings, GELU-tanh) with explicit
// forward and backward. Parameters carry Hugging Face GPT2LMHeadModel names, so a checkpoint's
// tensors load into `transformers` unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/parameters.h"
#include "kernels/classifier.h"
#include "model/gpt2_block.h"

namespace tessera {

struct Gpt2Config {
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t d_model = 256;
  int64_t vocab_size = 4096;
  int64_t max_seq_len = 256;

  // Throws Error naming the field when a size is not positive or d_model % n_head != 0.
  void validate() const;
  // Parameter count (with the tied embedding counted once).
  int64_t num_params() const;
  // FLOPs of one training step (forward + backward) per token at sequence length t:
  // 6·(matmul params) + 6·V·C for the tied head + 6·L·T·C for attention scores and values
  // (counting the causal half), as in PaLM's appendix B.
  double train_flops_per_token(int64_t t) const;
};

// What one micro-batch's forward keeps for its backward. The caller owns it; a pipeline stage can
// hold several. With recompute, only the block inputs are kept and each block's activations are
// rebuilt in one shared buffer during backward.
struct Gpt2Activations {
  int64_t batch = 0, seq_len = 0;
  bool recompute = false;
  Tensor tokens;                        // (B, T) i32, a copy of forward's input
  std::vector<Tensor> resid;            // L + 1 of (B, T, C): embedding, then each block's output
  std::vector<BlockActivations> block;  // L of them, or 1 shared when recompute
  Tensor lnf, lnf_mean, lnf_rstd;       // (B, T, C), (B·T), (B·T)
  Tensor losses;                        // (B·T)
  BlockScratch scratch;
  Tensor dresid;  // (B, T, C)
  Tensor dlnf;    // (B, T, C)
};

// Where one model instance sits in a parallel layout.
struct Gpt2Layout {
  int param_shards = 1;                  // ZeRO's data-parallel degree: every unit splits evenly
  parallel::Communicator* tp = nullptr;  // tensor-parallel group (null: none); not owned
};

class Gpt2 {
 public:
  // Registers and allocates this rank's parameters (zeros); call init_weights() or load them.
  // Units: 0 = "embedding" (wte, wpe; wte is also the tied LM head), 1..L = "h.<l>",
  // L + 1 = "ln_f". With a tp group of N ranks, rank r holds vocabulary rows
  // [r·V/N, (r+1)·V/N) of wte (embedding and LM head are vocabulary-parallel) and its share of
  // every block (gpt2_block.h); forward, loss and backward are then collective over tp. Throws
  // Error when n_head or vocab_size does not divide by N.
  Gpt2(const Gpt2Config& config, Device device = Device::cpu(), Gpt2Layout layout = {});

  const Gpt2Config& config() const { return config_; }
  int tp_rank() const { return tp_ ? tp_->rank() : 0; }
  int tp_size() const { return tp_ ? tp_->size() : 1; }
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }

  // GPT-2 initialization from `seed`: weights N(0, 0.02), residual projections N(0, 0.02/√(2L)),
  // biases 0, layernorm weights 1. Deterministic on every platform (own Box-Muller over
  // mt19937_64); a tensor-parallel rank draws the full tensors and keeps its part, so every
  // layout starts from the same weights.
  void init_weights(uint64_t seed);

  // Hooks told around each unit's use (ZeRO); null (the default) uses the parameters as they are.
  // Not owned. With hooks, forward/loss/backward/logits are collective over the hooks' group.
  void set_hooks(UnitHooks* hooks) { hooks_ = hooks; }
  UnitHooks* hooks() const { return hooks_; }

  Gpt2Activations make_activations(int64_t batch, int64_t seq_len, bool recompute) const;

  // Runs the model on tokens (B, T) i32 up to the final layernorm; fills acts.
  void forward(Gpt2Activations& acts, const Tensor& tokens) const;
  // Mean cross-entropy of the targets (B, T) after forward (evaluation; no gradients).
  double loss(Gpt2Activations& acts, const Tensor& targets) const;
  // Fused LM head + cross-entropy + backward through the whole model after forward. Parameter
  // gradients accumulate, scaled by dloss (= ∂L/∂loss_i: 1/(B·T·accumulation_steps) for a mean).
  // Returns the mean loss of this micro-batch.
  double backward(Gpt2Activations& acts, const Tensor& targets, float dloss);
  // logits (B·T, V) or, with last_only, (B, V) for each sequence's last position, after forward.
  // Throws Error on a tensor-parallel model (gather it into one first).
  void logits(Tensor& out, const Gpt2Activations& acts, bool last_only) const;

 private:
  std::string block_prefix(int64_t layer) const;
  void acquire(int unit, UnitHooks::Pass pass) const;
  void release(int unit) const;
  void grads_ready(int unit) const;

  Gpt2Config config_;
  ParameterSet params_;
  Tensor wte_, wpe_, lnf_w_, lnf_b_;
  Tensor dwte_, dwpe_, dlnf_w_, dlnf_b_;
  std::vector<BlockWeights> blocks_, block_grads_;
  UnitHooks* hooks_ = nullptr;
  parallel::Communicator* tp_ = nullptr;
  int64_t heads_local_ = 0;  // attention heads of this tp rank
  VocabShard vocab_shard_;   // this tp rank's wte rows, and the all-reduces of the loss
};

}  // namespace tessera
