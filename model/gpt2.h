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
#include "parallel/pipeline.h"

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
  // FLOPs of one training step (forward + backward) per token at sequence length t, PaLM's
  // appendix B count (the one MFU figures use: nanoGPT, Megatron): 6·(matmul params) + 6·V·C for
  // the tied head + 12·L·T·C for attention scores and values over the full T×T square (the causal
  // half is all a fused kernel computes, so attention runs at twice the rate this credits).
  double train_flops_per_token(int64_t t) const;
};

// What one micro-batch's forward through one of the rank's layer chunks keeps for its backward.
// The caller owns it; a pipeline stage can hold several. With recompute, only the block inputs are
// kept and each block's activations are rebuilt in one shared buffer during backward. On a
// pipeline stage, resid[0] is the chunk's input (the embedding on the first virtual stage, the
// previous virtual stage's output elsewhere), and dresid carries the gradient across the
// boundary. With sequence parallelism resid and dresid hold
// this tp rank's B·T/tp rows (C wide); lnf, losses and dlnf are whole.
struct Gpt2Activations {
  int64_t batch = 0, seq_len = 0;
  int chunk = 0;  // which of the rank's layer chunks (0 without interleaving)
  bool recompute = false;
  Tensor tokens;                        // (B, T) i32, a copy of forward's input (first stage)
  std::vector<Tensor> resid;            // layers + 1 of (B, T, C): input, then each block's output
  std::vector<BlockActivations> block;  // one per layer of the stage, or 1 shared when recompute
  Tensor lnf, lnf_mean, lnf_rstd;       // (B, T, C), (B·T), (B·T)  (last stage)
  Tensor targets;                       // (B, T) i32, a copy of loss's / backward's targets
  Tensor losses;                        // (B·T)
  BlockScratch scratch;
  Tensor dresid;          // (B, T, C)
  Tensor dresid_rounded;  // (B, T, C) dresid in the GEMMs' 16-bit type (undefined in f32)
  Tensor dlnf;            // (B, T, C)

  // The stage's output (to send to the next stage) and its input gradient (to the previous).
  const Tensor& output() const { return resid.back(); }
};

// Where one model instance sits in a parallel layout.
struct Gpt2Layout {
  int param_shards = 1;                     // ZeRO's data-parallel degree: every unit splits evenly
  parallel::Communicator* tp = nullptr;     // tensor-parallel group (null: none); not owned
  int pp_rank = 0, pp_size = 1;             // pipeline stage of this rank, and the stages
  std::vector<int64_t> layers_per_stage{};  // per virtual stage; empty: an even split
  bool sequence_parallel =
      false;               // split the B·T rows over tp outside the blocks' parallel regions
  int virtual_stages = 1;  // layer chunks per rank: > 1 interleaves (chunk k is stage k·pp + rank)
};

class Gpt2 {
 public:
  // Registers and allocates this rank's parameters (zeros); call init_weights() or load them.
  // Units, in this order, each present on the stages that hold it: "wte" (first stage; also the
  // tied LM head when there is one stage), "wpe" (first), "h.<l>" for the stage's layers (chunk
  // by chunk, with virtual stages: chunk k holds the layers of virtual stage k·pp + pp_rank),
  // "ln_f" (last) and, when there are several stages, "head" on the last: a copy of wte under the
  // same name, kept equal to the first stage's by summing their gradients over the embedding group
  // (as Megatron does). With a tp group of N ranks, rank r holds vocabulary rows
  // [r·V/N, (r+1)·V/N) of wte (embedding and LM head are vocabulary-parallel) and its share of
  // every block (gpt2_block.h); forward, loss and backward are then collective over tp. Throws
  // Error when n_head or vocab_size does not divide by N, or the layers do not split over stages.
  Gpt2(const Gpt2Config& config, Device device = Device::cpu(), Gpt2Layout layout = {});

  // The ParameterSet such a model part would have, laid out but without buffers: units, entries,
  // offsets (what a sharded checkpoint's index records), at no memory cost.
  static ParameterSet parameter_layout(const Gpt2Config& config, const Gpt2Layout& layout);

  const Gpt2Config& config() const { return config_; }
  int tp_rank() const { return tp_ ? tp_->rank() : 0; }
  int tp_size() const { return tp_ ? tp_->size() : 1; }
  // Whether this rank holds the embedding (first stage) and the LM head (last stage).
  bool is_first_stage() const { return pp_rank_ == 0; }
  bool is_last_stage() const { return pp_rank_ == pp_size_ - 1; }
  // The rank's layer chunks (virtual stages), and the layers [first, end) of chunk c.
  int chunks() const { return static_cast<int>(chunks_.size()); }
  parallel::StageLayers chunk_layers(int c) const { return chunks_.at(c).layers; }
  // The unit holding the last stage's head copy of wte (-1: none; one stage has no copy). Its
  // gradient must be summed with the first stage's wte unit's over the embedding group.
  int head_unit() const { return unit_head_; }
  // The unit holding the first stage's wte (-1: not the first stage).
  int wte_unit() const { return unit_wte_; }
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }
  // The whole model's parameters (one rank, one stage) in initialization order, registered but
  // not allocated: names and full shapes.
  static ParameterSet whole_parameters(const Gpt2Config& config);
  // The pipeline stage that holds (the counted copy of) a whole-model parameter.
  int owner_stage(const std::string& name) const;

  // GPT-2 initialization from `seed`: weights N(0, 0.02), residual projections N(0, 0.02/√(2L)),
  // biases 0, layernorm weights 1. Deterministic on every platform (own Box-Muller over
  // mt19937_64, drawn on the host, then copied to the model's device); every rank draws the whole
  // model's tensors in order and keeps its part, so every layout starts from the same weights
  // (and the head copy from wte's).
  void init_weights(uint64_t seed);

  // Hooks told around each unit's use (ZeRO); null (the default) uses the parameters as they are.
  // Not owned. With hooks, forward/loss/backward/logits are collective over the hooks' group.
  void set_hooks(UnitHooks* hooks) { hooks_ = hooks; }
  UnitHooks* hooks() const { return hooks_; }

  // The type every GEMM's (and attention's) operands are rounded to (train.precision): f32 (the
  // default, exact), bf16 or f16 (CUDA: tensor cores, fp32 accumulation; the CPU rounds the same
  // way, as the CUDA path's reference). Weights, gradients and the residual stream stay f32;
  // activations made after this call that only GEMMs read are stored in this type
  // (BlockActivations::allocate).
  void set_gemm_dtype(DType gemm) { gemm_ = gemm; }
  // Whether the blocks' GEMM weights are rounded to the GEMMs' 16-bit type once per forward
  // (autocast's weight cache): each forward rounds a block's unit in one pass, and that block's
  // backward (and recomputation) reads the copy again, instead of every GEMM rounding its weight,
  // forward and backward. True with 16-bit GEMMs unless the hooks free parameters (ZeRO-3: the
  // copies would undo its saving). The copy is derived from the parameters: forward stays const.
  bool rounds_weights() const;
  DType gemm_dtype() const { return gemm_; }

  // Activations of one micro-batch through layer chunk `chunk`.
  Gpt2Activations make_activations(int64_t batch, int64_t seq_len, bool recompute,
                                   int chunk = 0) const;

  // Whether acts' chunk is the whole model's first virtual stage (it embeds) or its last (it ends
  // with the final layernorm, the LM head and the loss).
  bool starts_model(const Gpt2Activations& acts) const {
    return is_first_stage() && acts.chunk == 0;
  }
  bool ends_model(const Gpt2Activations& acts) const {
    return is_last_stage() && acts.chunk == chunks() - 1;
  }
  // acts' chunk's forward: the first virtual stage embeds tokens (B, T) i32; the others start from
  // acts.resid[0], which the caller filled with the previous virtual stage's output (tokens
  // unused). The last one ends with the final layernorm. Fills acts.
  void forward(Gpt2Activations& acts, const Tensor& tokens) const;
  // Mean cross-entropy of the targets (B, T) after forward (last virtual stage; evaluation).
  double loss(Gpt2Activations& acts, const Tensor& targets) const;
  // acts' chunk's backward after its forward. The last virtual stage starts from the fused LM
  // head and cross-entropy of targets (B, T); the others from acts.dresid, which the caller
  // filled with the next virtual stage's input gradient. On return acts.dresid holds the chunk's
  // input gradient (to send to the previous virtual stage). Parameter gradients accumulate,
  // scaled by dloss (= ∂L/∂loss_i: 1/(B·T·accumulation_steps) for a mean). Returns the
  // micro-batch's mean loss on the last virtual stage, 0 elsewhere.
  double backward(Gpt2Activations& acts, const Tensor& targets, float dloss);
  // logits (B·T, V) or, with last_only, (B, V) for each sequence's last position, after forward.
  // Throws Error unless the model is whole (one tp rank, one stage).
  void logits(Tensor& out, const Gpt2Activations& acts, bool last_only) const;

 private:
  // Registers the part's parameters (the constructor up to allocation).
  struct Unallocated {};
  Gpt2(const Gpt2Config& config, const Gpt2Layout& layout, Unallocated);
  // A layer chunk, and where its blocks start in blocks_ (and its units after unit_first_block_).
  struct Chunk {
    parallel::StageLayers layers;
    int64_t base = 0;
  };
  std::string block_prefix(int64_t layer) const;
  int block_unit(int64_t index) const { return unit_first_block_ + static_cast<int>(index); }
  void acquire(int unit, UnitHooks::Pass pass) const;
  void release(int unit) const;
  void grads_ready(int unit) const;
  // Forward: block `index`'s weights for its GEMMs, rounded now when rounds_weights().
  const BlockWeights& round_block(int64_t index) const;
  // Backward: the copy the last forward rounded, or the f32 weights.
  const BlockWeights& gemm_weights(int64_t index) const;
  // Whether the blocks' rounded copies exist, of the GEMMs' current type.
  bool has_rounded_copies() const;
  // The LM head's weights (wte, or the last stage's copy) and gradient.
  const Tensor& head_w() const { return unit_head_ >= 0 ? head_ : wte_; }
  Tensor& head_grad() { return unit_head_ >= 0 ? dhead_ : dwte_; }

  Gpt2Config config_;
  ParameterSet params_;
  Tensor wte_, wpe_, lnf_w_, lnf_b_, head_;
  Tensor dwte_, dwpe_, dlnf_w_, dlnf_b_, dhead_;
  std::vector<BlockWeights> blocks_, block_grads_;    // the stage's layers, chunk by chunk
  mutable std::vector<Tensor> rounded_units_;         // per block: its unit's flat buffer rounded
  mutable std::vector<BlockWeights> rounded_blocks_;  // blocks_ with the 4 GEMM weights' copies
  UnitHooks* hooks_ = nullptr;
  DType gemm_ = DType::f32;
  parallel::Communicator* tp_ = nullptr;
  BlockParallel par_;  // tp_ and whether sequence parallelism is on
  int pp_rank_ = 0, pp_size_ = 1;
  std::vector<int64_t> layers_per_stage_;
  std::vector<Chunk> chunks_;
  int unit_wte_ = -1, unit_wpe_ = -1, unit_first_block_ = -1, unit_lnf_ = -1, unit_head_ = -1;
  int64_t heads_local_ = 0;  // attention heads of this tp rank
  VocabShard vocab_shard_;   // this tp rank's wte rows, and the all-reduces of the loss
};

}  // namespace tessera
