// Moving a model's state between a parallel layout (tensor-parallel parts, ZeRO shards) and one
// whole, layout-free model: consolidated checkpoints are written from, and loaded into, the whole
// model, so a checkpoint resumes under any tp, dp and ZeRO stage.
#pragma once

#include "model/gpt2.h"
#include "parallel/zero_optimizer.h"
#include "trainer/checkpoint.h"

namespace tessera {

// Fills `whole` (a Gpt2 of the same config without tp or sharding; may be null) with the weights
// of the layout that `local` and `optimizer` are part of and, when whole_opt is non-null, with
// the AdamW moments and step count (each tensor from the stage that holds it: broadcast over pp).
// Collective over tp, pp and the optimizer's dp group: every rank
// calls it with the same with_moments; ranks that need no copy pass nulls.
void gather_model_state(const Gpt2& local, parallel::DistributedAdamW& optimizer,
                        parallel::Communicator& tp, parallel::Communicator& pp, bool with_moments,
                        Gpt2* whole, OptimizerState* whole_opt);

// This rank's part (its stage's tensors, cut for its tp rank) of `whole`'s weights, into `local`
// (before its optimizer takes its ZeRO shards of them). Not collective.
void cut_weights(const Gpt2& whole, Gpt2& local);

// This rank's tensor-parallel part of whole-model moments (laid out like `whole`'s
// ParameterSet), laid out like `local`'s: what DistributedAdamW::load_moments takes.
OptimizerState cut_moments(const OptimizerState& whole_opt, const Gpt2& whole, const Gpt2& local);

}  // namespace tessera
