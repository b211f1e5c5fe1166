#include "trainer/pipeline_runner.h"

namespace tessera {
namespace {

using parallel::P2POp;

void wait(std::vector<parallel::CommHandle>& sends) {
  for (parallel::CommHandle& h : sends) h.wait();
  sends.clear();
}

}  // namespace

PipelineRunner::PipelineRunner(Gpt2& model, parallel::DistributedAdamW& optimizer,
                               parallel::Communicator& pp, parallel::PipelineSchedule schedule,
                               int micro_batches, int64_t batch, int64_t seq_len, bool recompute)
    : model_(model),
      optimizer_(optimizer),
      pp_(pp),
      micro_batches_(micro_batches),
      prev_((pp.rank() + pp.size() - 1) % pp.size()),
      next_((pp.rank() + 1) % pp.size()),
      order_(
          parallel::pipeline_order(schedule, pp.rank(), pp.size(), micro_batches, model.chunks())) {
  slots_.resize(model.chunks());
  for (int c = 0; c < model.chunks(); ++c) {
    const int n = std::max(1, parallel::pipeline_slots(order_, c));  // >= 1 for evaluation
    for (int i = 0; i < n; ++i)
      slots_[c].push_back({model.make_activations(batch, seq_len, recompute, c), {}});
  }
}

void PipelineRunner::wait_all_sends() {
  for (std::vector<Slot>& chunk : slots_)
    for (Slot& s : chunk) wait(s.sends);
}

// The slot's forward: its input from the previous virtual stage, its output to the next.
void PipelineRunner::forward(Slot& s, const Tensor& tokens) {
  Gpt2Activations& acts = s.acts;
  wait(s.sends);  // the slot's buffers are free again
  if (!model_.starts_model(acts)) pp_.p2p({P2POp::recv(acts.resid[0], prev_)});
  model_.forward(acts, tokens);
  if (!model_.ends_model(acts))
    s.sends.push_back(pp_.p2p_async({P2POp::send(acts.output(), next_)}));
}

double PipelineRunner::train_step(const std::vector<MicroBatch>& batches, float dloss) {
  TS_CHECK_EQ(static_cast<int>(batches.size()), micro_batches_,
              "PipelineRunner::train_step: micro-batches");
  double loss = 0.0;
  for (const parallel::PipelineStep& step : order_) {
    const int m = step.micro_batch;
    Slot& s = slot(step.chunk, m);
    if (step.forward) {
      forward(s, batches[m].inputs);
      continue;
    }
    Gpt2Activations& acts = s.acts;
    if (!model_.ends_model(acts)) pp_.p2p({P2POp::recv(acts.dresid, next_)});
    // Each chunk's last backward of the step is micro-batch M − 1's: its units' gradients are
    // final.
    optimizer_.begin_micro_batch(m + 1 == micro_batches_);
    loss += model_.backward(acts, batches[m].targets, dloss);
    optimizer_.end_micro_batch();
    if (!model_.starts_model(acts))
      s.sends.push_back(pp_.p2p_async({P2POp::send(acts.dresid, prev_)}));
  }
  wait_all_sends();
  return loss;
}

double PipelineRunner::evaluate(const MicroBatch& batch) {
  wait_all_sends();
  double loss = 0.0;
  for (int c = 0; c < model_.chunks(); ++c) {
    Slot& s = slot(c, 0);
    forward(s, batch.inputs);
    if (model_.ends_model(s.acts)) loss = model_.loss(s.acts, batch.targets);
  }
  wait_all_sends();
  return loss;
}

}  // namespace tessera
