#include "trainer/model_state.h"

#include "parallel/tensor_parallel.h"

namespace tessera {
namespace {

// The whole tensor of entry e from this rank's part `part` (collective over tp).
Tensor join_over_tp(const Tensor& part, const ParameterEntry& e, parallel::Communicator& tp) {
  Tensor local = Tensor::empty(part.shape(), DType::f32);
  local.copy_from(part);
  if (e.split.replicated() || tp.size() == 1) return local;
  Tensor parts = Tensor::empty({part.numel() * tp.size()}, DType::f32);
  tp.all_gather(parts, local.view({part.numel()}));
  return parallel::tp_join(parts, e.split, parallel::tp_full_shape(e.shape, e.split));
}

}  // namespace

void gather_model_state(const Gpt2& local, parallel::DistributedAdamW& optimizer,
                        parallel::Communicator& tp, bool with_moments, Gpt2* whole,
                        OptimizerState* whole_opt) {
  const ParameterSet& lp = local.params();
  optimizer.gather_all_params();
  for (const ParameterEntry& e : lp.entries()) {
    const Tensor full = join_over_tp(lp.param(e), e, tp);
    if (whole) whole->params().param(e.name).copy_from(full);
  }
  optimizer.release_all_params();
  if (!with_moments) return;

  OptimizerState mine;
  optimizer.gather_moments(mine.exp_avg, mine.exp_avg_sq);
  if (whole_opt) {
    TS_CHECK(whole != nullptr, "gather_model_state: moments need the whole model's layout");
    const ParameterSet& wp = whole->params();
    whole_opt->exp_avg = Tensor::zeros({wp.total()}, DType::f32);
    whole_opt->exp_avg_sq = Tensor::zeros({wp.total()}, DType::f32);
    whole_opt->steps = optimizer.steps_taken();
  }
  for (const ParameterEntry& e : lp.entries()) {
    const Tensor m = join_over_tp(mine.exp_avg.carve(e.offset, e.shape), e, tp);
    const Tensor v = join_over_tp(mine.exp_avg_sq.carve(e.offset, e.shape), e, tp);
    if (whole_opt) {
      const ParameterEntry& w = whole->params().entry(e.name);
      whole_opt->exp_avg.carve(w.offset, w.shape).copy_from(m);
      whole_opt->exp_avg_sq.carve(w.offset, w.shape).copy_from(v);
    }
  }
}

void cut_weights(const Gpt2& whole, Gpt2& local) {
  for (const ParameterEntry& e : local.params().entries()) {
    Tensor p = local.params().param(e);
    p.copy_from(parallel::tp_cut(whole.params().param(e.name), e.split));
  }
}

OptimizerState cut_moments(const OptimizerState& whole_opt, const Gpt2& whole, const Gpt2& local) {
  const ParameterSet& lp = local.params();
  OptimizerState out{Tensor::zeros({lp.total()}, DType::f32),
                     Tensor::zeros({lp.total()}, DType::f32), whole_opt.steps};
  for (const ParameterEntry& e : lp.entries()) {
    const ParameterEntry& w = whole.params().entry(e.name);
    out.exp_avg.carve(e.offset, e.shape)
        .copy_from(parallel::tp_cut(whole_opt.exp_avg.carve(w.offset, w.shape), e.split));
    out.exp_avg_sq.carve(e.offset, e.shape)
        .copy_from(parallel::tp_cut(whole_opt.exp_avg_sq.carve(w.offset, w.shape), e.split));
  }
  return out;
}

}  // namespace tessera
