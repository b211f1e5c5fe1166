#include "trainer/pipeline_runner.h"

namespace tessera {

using parallel::P2POp;

PipelineRunner::PipelineRunner(Gpt2& model, parallel::DistributedAdamW& optimizer,
                               parallel::Communicator& pp, parallel::PipelineSchedule schedule,
                               int micro_batches, int64_t batch, int64_t seq_len, bool recompute)
    : model_(model),
      optimizer_(optimizer),
      pp_(pp),
      schedule_(schedule),
      micro_batches_(micro_batches) {
  const int slots = parallel::pipeline_slots(schedule, pp.rank(), pp.size(), micro_batches);
  for (int i = 0; i < slots; ++i)
    slots_.push_back(model.make_activations(batch, seq_len, recompute));
  sends_.resize(slots_.size());
}

void PipelineRunner::wait_sends(int slot_index) {
  for (parallel::CommHandle& h : sends_[slot_index]) h.wait();
  sends_[slot_index].clear();
}

double PipelineRunner::train_step(const std::vector<MicroBatch>& batches, float dloss) {
  TS_CHECK_EQ(static_cast<int>(batches.size()), micro_batches_,
              "PipelineRunner::train_step: micro-batches");
  const int stage = pp_.rank();
  const bool first = model_.is_first_stage(), last = model_.is_last_stage();
  double loss = 0.0;
  for (const parallel::PipelineStep& step :
       parallel::pipeline_order(schedule_, stage, pp_.size(), micro_batches_)) {
    const int m = step.micro_batch;
    const int s = m % static_cast<int>(slots_.size());
    Gpt2Activations& acts = slot(m);
    if (step.forward) {
      wait_sends(s);  // the slot's buffers are free again
      if (!first) pp_.p2p({P2POp::recv(acts.resid[0], stage - 1)});
      model_.forward(acts, batches[m].inputs);
      if (!last) sends_[s].push_back(pp_.p2p_async({P2POp::send(acts.output(), stage + 1)}));
    } else {
      if (!last) pp_.p2p({P2POp::recv(acts.dresid, stage + 1)});
      optimizer_.begin_micro_batch(m + 1 == micro_batches_);
      loss += model_.backward(acts, batches[m].targets, dloss);
      optimizer_.end_micro_batch();
      if (!first) sends_[s].push_back(pp_.p2p_async({P2POp::send(acts.dresid, stage - 1)}));
    }
  }
  for (size_t s = 0; s < slots_.size(); ++s) wait_sends(static_cast<int>(s));
  return loss;
}

double PipelineRunner::evaluate(const MicroBatch& batch) {
  const int stage = pp_.rank();
  for (size_t s = 0; s < slots_.size(); ++s) wait_sends(static_cast<int>(s));
  Gpt2Activations& acts = slots_[0];
  if (!model_.is_first_stage()) pp_.p2p({P2POp::recv(acts.resid[0], stage - 1)});
  model_.forward(acts, batch.inputs);
  if (!model_.is_last_stage()) {
    pp_.p2p({P2POp::send(acts.output(), stage + 1)});
    return 0.0;
  }
  return model_.loss(acts, batch.targets);
}

}  // namespace tessera
