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
                        parallel::Communicator& tp, parallel::Communicator& pp, bool with_moments,
                        Gpt2* whole, OptimizerState* whole_opt) {
  const ParameterSet& lp = local.params();
  const ParameterSet all = Gpt2::whole_parameters(local.config());
  // Every whole-model tensor in order: its stage joins the tp parts, then broadcasts it over pp.
  auto each_tensor = [&](auto&& local_part, auto&& store) {
    for (const ParameterEntry& w : all.entries()) {
      const int owner = local.owner_stage(w.name);
      Tensor full;
      if (owner == pp.rank()) {
        const ParameterEntry& e = lp.entry(w.name);
        full = join_over_tp(local_part(e), e, tp);
      } else {
        full = Tensor::empty(w.shape, DType::f32);
      }
      if (pp.size() > 1) pp.broadcast(full, owner);
      store(w.name, full);
    }
  };
  optimizer.gather_all_params();
  each_tensor([&](const ParameterEntry& e) { return lp.param(e); },
              [&](const std::string& name, const Tensor& full) {
                if (whole) whole->params().param(name).copy_from(full);
              });
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
  for (const auto& [moments, out] :
       {std::pair{&mine.exp_avg, whole_opt ? &whole_opt->exp_avg : nullptr},
        {&mine.exp_avg_sq, whole_opt ? &whole_opt->exp_avg_sq : nullptr}}) {
    each_tensor([&](const ParameterEntry& e) { return moments->carve(e.offset, e.shape); },
                [&](const std::string& name, const Tensor& full) {
                  if (!out) return;
                  const ParameterEntry& w = whole->params().entry(name);
                  out->carve(w.offset, w.shape).copy_from(full);
                });
  }
}

}  // namespace tessera
