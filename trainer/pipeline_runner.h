// Runs a pipeline stage's part of a training step (or of an evaluation batch): the schedule's
// forwards and backwards over the step's micro-batches, receiving each micro-batch's input
// activation from the previous stage and its output gradient from the next over the pp group.
// Sends are asynchronous (waited for before their buffer is reused), receives block, so neither
// GPipe nor 1F1B can deadlock. With one stage it is plain gradient accumulation.
#pragma once

#include <vector>

#include "model/gpt2.h"
#include "parallel/pipeline.h"
#include "parallel/zero_optimizer.h"

namespace tessera {

// One micro-batch: inputs and targets (B, T) i32.
struct MicroBatch {
  Tensor inputs, targets;
  MicroBatch(int64_t b, int64_t t)
      : inputs(Tensor::empty({b, t}, DType::i32)), targets(Tensor::empty({b, t}, DType::i32)) {}
};

class PipelineRunner {
 public:
  // Activations for the micro-batches the schedule holds at once (parallel::pipeline_slots).
  // model, optimizer and pp must outlive the runner.
  PipelineRunner(Gpt2& model, parallel::DistributedAdamW& optimizer, parallel::Communicator& pp,
                 parallel::PipelineSchedule schedule, int micro_batches, int64_t batch,
                 int64_t seq_len, bool recompute);

  // Forward and backward of every micro-batch (batches.size() == micro_batches) in schedule
  // order, telling the optimizer where micro-batches begin and end. Returns the sum of the
  // micro-batches' mean losses on the last stage, 0 elsewhere. Collective over pp (and whatever
  // the model and optimizer communicate over).
  double train_step(const std::vector<MicroBatch>& batches, float dloss);

  // Forward of one batch; returns its mean loss on the last stage, 0 elsewhere. Collective over pp.
  double evaluate(const MicroBatch& batch);

 private:
  Gpt2Activations& slot(int micro_batch) { return slots_[micro_batch % slots_.size()]; }
  void wait_sends(int slot_index);

  Gpt2& model_;
  parallel::DistributedAdamW& optimizer_;
  parallel::Communicator& pp_;
  parallel::PipelineSchedule schedule_;
  int micro_batches_;
  std::vector<Gpt2Activations> slots_;
  std::vector<std::vector<parallel::CommHandle>> sends_;  // per slot, not yet waited for
};

}  // namespace tessera
