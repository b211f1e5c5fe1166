// Gathering a model's state from a parallel layout (pipeline stages, tensor-parallel parts, ZeRO
// shards) into one whole, layout-free model: what consolidated checkpoints are written from and
// what sampling runs on. (Loading goes the other way, tensor by tensor: sharded_checkpoint.h.)
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

}  // namespace tessera
