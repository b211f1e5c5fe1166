// Runs a pipeline stage's part of a training step (or of an evaluation batch): the schedule's
// forwards and backwards over the step's micro-batches and the rank's layer chunks, receiving
// each input activation from the previous virtual stage and each output gradient from the next
// over the pp group (virtual stage k·P + s is chunk k of rank s, so chunk boundaries wrap from
// rank P − 1 to rank 0). Sends are asynchronous (waited for before their buffer is reused),
// receives block. Every ordered pair of ranks sends its messages in the order the receiver posts
// them, even at P = 2 where activations and gradients share both directions, so neither MPI nor
// NCCL needs tags; and no schedule can deadlock (tests/parallel/test_pipeline.cpp simulates both).
// With one stage it is plain gradient accumulation.
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
  // Activations for the micro-batches each of the model's chunks holds at once under the schedule
  // (parallel::pipeline_slots). model, optimizer and pp must outlive the runner. Throws Error for
  // a schedule the layout cannot run (parallel::pipeline_order).
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
  // A chunk's activations for its micro-batches in flight, and their sends not yet waited for.
  struct Slot {
    Gpt2Activations acts;
    std::vector<parallel::CommHandle> sends;
  };
  Slot& slot(int chunk, int micro_batch) {
    std::vector<Slot>& s = slots_[chunk];
    return s[micro_batch % s.size()];
  }
  void forward(Slot& slot, const Tensor& tokens);
  void wait_all_sends();

  Gpt2& model_;
  parallel::DistributedAdamW& optimizer_;
  parallel::Communicator& pp_;
  int micro_batches_;
  int prev_, next_;  // pp ranks of the previous and next stage (wrapping around)
  std::vector<parallel::PipelineStep> order_;
  std::vector<std::vector<Slot>> slots_;  // per chunk
};

}  // namespace tessera
