#include "parallel/zero_optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/residual.h"

namespace tessera::parallel {

DistributedAdamW::DistributedAdamW(ParameterSet& params, Communicator& dp, int stage,
                                   const AdamWConfig& config, Communicator* tp, Communicator* pp)
    : params_(params),
      dp_(dp),
      tp_(tp),
      pp_(pp),
      stage_(stage),
      config_(config),
      shards_(stage == 0 ? 1 : dp.size()),
      shard_rank_(stage == 0 ? 0 : dp.rank()) {
  TS_CHECK(stage >= 0 && stage <= 3, "parallel.zero must be 0, 1, 2 or 3, got ", stage);
  const auto& units = params_.units();
  for (const ParameterUnit& u : units)
    TS_CHECK(u.numel % (16 * int64_t{dp.size()}) == 0, "ZeRO: unit '", u.name, "' (", u.numel,
             " elements) does not split into ", dp.size(),
             " chunks: allocate the ParameterSet with shards = dp size");
  shard_numel_ = params_.total() / shards_;
  const Device dev = params_.device();
  exp_avg_ = Tensor::zeros({shard_numel_}, DType::f32, dev);
  exp_avg_sq_ = Tensor::zeros({shard_numel_}, DType::f32, dev);
  if (stage_ >= 2) grad_shard_ = Tensor::zeros({shard_numel_}, DType::f32, dev);
  for (size_t u = 0; u < units.size(); ++u) {
    const int ui = static_cast<int>(u);
    const int64_t lo = chunk_offset(ui), hi = lo + chunk_numel(ui);
    for (size_t i = units[u].first_entry; i < units[u].end_entry; ++i) {
      const ParameterEntry& e = params_.entries()[i];
      const int64_t e_lo = e.offset - units[u].offset, e_hi = e_lo + shape_numel(e.shape);
      const int64_t a = std::max(lo, e_lo), b = std::min(hi, e_hi);
      if (a < b) segments_.push_back({ui, &e, a, b});
    }
  }
  unit_state_.assign(units.size(), UnitState::gathered);
  in_use_.assign(units.size(), 0);
  gathers_.resize(units.size());
  if (stage_ >= 2) {
    for (size_t u = 0; u < units.size(); ++u) params_.unit_grads(u).storage()->release();
  }
  if (stage_ == 3) {
    param_shard_ = Tensor::empty({shard_numel_}, DType::f32, dev);
    for (size_t u = 0; u < units.size(); ++u) {
      const int ui = static_cast<int>(u);
      param_shard_.carve(shard_offset(ui), {chunk_numel(ui)})
          .copy_from(chunk_of(params_.unit_params(ui), ui));
      params_.unit_params(ui).storage()->release();
      unit_state_[u] = UnitState::released;
    }
  }
}

int64_t DistributedAdamW::chunk_numel(int u) const {
  return params_.units()[u].numel / shards_;
}

int64_t DistributedAdamW::shard_offset(int u) const {
  return params_.units()[u].offset / shards_;
}

Tensor DistributedAdamW::chunk_of(const Tensor& unit_buffer, int u) const {
  return unit_buffer.carve(chunk_offset(u), {chunk_numel(u)});
}

Tensor DistributedAdamW::param_chunk(int u) const {
  return stage_ == 3 ? param_shard_.carve(shard_offset(u), {chunk_numel(u)})
                     : chunk_of(params_.unit_params(u), u);
}

Tensor DistributedAdamW::grad_chunk(int u) const {
  return stage_ >= 2 ? grad_shard_.carve(shard_offset(u), {chunk_numel(u)})
                     : chunk_of(params_.unit_grads(u), u);
}

// --- Stage 3: gathering units --------------------------------------------------------------------

void DistributedAdamW::start_gather(int u) {
  if (unit_state_[u] != UnitState::released) return;
  const Tensor& full = params_.unit_params(u);
  full.storage()->materialize();
  gathers_[u] = dp_.all_gather_async(full, param_chunk(u));
  unit_state_[u] = UnitState::gathering;
}

void DistributedAdamW::wait_gathered(int u) {
  start_gather(u);
  if (unit_state_[u] == UnitState::gathering) {
    gathers_[u].wait();
    gathers_[u] = CommHandle();
    unit_state_[u] = UnitState::gathered;
  }
}

void DistributedAdamW::acquire(int u, Pass pass) {
  if (stage_ == 3 && !all_pinned_) {
    wait_gathered(u);
    ++in_use_[u];
    const int next = pass == Pass::forward ? u + 1 : u - 1;
    if (next >= 0 && next < static_cast<int>(unit_state_.size())) start_gather(next);
  }
  if (stage_ >= 2 && pass == Pass::backward && params_.unit_grads(u).storage()->released()) {
    Tensor g = params_.unit_grads(u);
    g.storage()->materialize();
    g.zero_();
  }
}

void DistributedAdamW::release(int u) {
  if (stage_ != 3 || all_pinned_) return;
  TS_CHECK(in_use_[u] > 0, "ZeRO-3: release of unit '", params_.units()[u].name,
           "' without acquire");
  if (--in_use_[u] == 0) {
    params_.unit_params(u).storage()->release();
    unit_state_[u] = UnitState::released;
  }
}

void DistributedAdamW::drop_gathered_units() {
  for (size_t u = 0; u < unit_state_.size(); ++u) {
    const int ui = static_cast<int>(u);
    if (unit_state_[u] == UnitState::gathering) wait_gathered(ui);  // a prefetch nobody used
    if (unit_state_[u] == UnitState::gathered) {
      TS_CHECK(in_use_[u] == 0, "ZeRO-3: unit '", params_.units()[u].name,
               "' still acquired at the optimizer step");
      params_.unit_params(ui).storage()->release();
      unit_state_[u] = UnitState::released;
    }
  }
}

void DistributedAdamW::gather_all_params() {
  if (stage_ != 3) return;
  for (size_t u = 0; u < unit_state_.size(); ++u) start_gather(static_cast<int>(u));
  for (size_t u = 0; u < unit_state_.size(); ++u) wait_gathered(static_cast<int>(u));
  all_pinned_ = true;
}

void DistributedAdamW::release_all_params() {
  if (stage_ != 3) return;
  all_pinned_ = false;
  drop_gathered_units();
}

// --- Gradients -------------------------------------------------------------------------------

void DistributedAdamW::begin_micro_batch(bool last_of_step) {
  reduce_this_micro_batch_ = stage_ >= 2 || last_of_step;
}

void DistributedAdamW::grads_ready(int u) {
  if (!reduce_this_micro_batch_) return;
  for (Pending& p : pending_) p.handle.test();  // drives the earlier reductions (MPI progress)
  const Tensor& g = params_.unit_grads(u);
  CommHandle h = stage_ == 0 ? dp_.all_reduce_async(g, ReduceOp::sum)
                             : dp_.reduce_scatter_async(chunk_of(g, u), g, ReduceOp::sum);
  pending_.push_back({u, std::move(h)});
}

void DistributedAdamW::wait_pending() {
  for (Pending& p : pending_) p.handle.wait();
}

void DistributedAdamW::end_micro_batch() {
  wait_pending();
  if (stage_ >= 2) {
    for (const Pending& p : pending_) {
      const Tensor reduced = chunk_of(params_.unit_grads(p.unit), p.unit);
      Tensor acc = grad_chunk(p.unit);
      residual_forward(acc, acc, reduced);  // acc += reduced, on the gradients' device
      params_.unit_grads(p.unit).storage()->release();
    }
  }
  pending_.clear();
}

// --- The step ----------------------------------------------------------------------------------

void DistributedAdamW::tie_unit(int unit, Communicator& group, bool counted_in_norm) {
  TS_CHECK(unit >= 0 && unit < static_cast<int>(params_.units().size()), "tie_unit: unit ", unit,
           " outside the ", params_.units().size(), " units");
  tied_unit_ = unit;
  tied_group_ = &group;
  tied_counted_ = counted_in_norm;
}

double DistributedAdamW::step(double lr, const GradScaling& scaling) {
  TS_CHECK(pending_.empty(), "DistributedAdamW::step before end_micro_batch()");
  // Stage 3: a prefetch still in flight reads the shard the update is about to write, and a
  // gathered unit would keep the old weights: finish and drop them first.
  if (stage_ == 3) drop_gathered_units();
  const auto& units = params_.units();
  const int nunits = static_cast<int>(units.size());

  // Tied copies first take their summed gradient. Global norm over the whole model: stage 0
  // holds the whole reduced gradient of its part on every dp rank, stages 1-3 sum their chunks
  // over dp; tp parts add up over tp (parameters replicated over tp counted on tp rank 0 only),
  // stages over pp (the head copy of wte not counted).
  if (tied_group_ && tied_group_->size() > 1) tied_group_->all_reduce(grad_chunk(tied_unit_));
  const bool tp_split = tp_ && tp_->size() > 1;
  // Sequence parallelism leaves layernorm gradients as partial sums over tp: add them up (one
  // all-reduce of all such segments of this rank's chunks; the tp ranks' chunks line up).
  if (tp_split) {
    std::vector<const Segment*> partial;
    int64_t n = 0;
    for (const Segment& g : segments_)
      if (g.entry->tp_partial) {
        partial.push_back(&g);
        n += g.hi - g.lo;
      }
    if (n > 0) {
      Tensor packed = Tensor::empty({n}, DType::f32, params_.device());
      int64_t at = 0;
      auto view = [&](const Segment* g) {
        return grad_chunk(g->unit).carve(g->lo - chunk_offset(g->unit), {g->hi - g->lo});
      };
      for (const Segment* g : partial) {
        packed.carve(at, {g->hi - g->lo}).copy_from(view(g));
        at += g->hi - g->lo;
      }
      tp_->all_reduce(packed, ReduceOp::sum);
      at = 0;
      for (const Segment* g : partial) {
        Tensor v = view(g);
        v.copy_from(packed.carve(at, {g->hi - g->lo}));
        at += g->hi - g->lo;
      }
    }
  }
  std::vector<Tensor> counted;
  for (const Segment& g : segments_) {
    if (tp_split && g.entry->split.replicated() && tp_->rank() != 0) continue;
    if (g.unit == tied_unit_ && !tied_counted_) continue;
    counted.push_back(grad_chunk(g.unit).carve(g.lo - chunk_offset(g.unit), {g.hi - g.lo}));
  }
  double sq = grad_norm_squared(counted);
  if (stage_ >= 1) sq = all_reduce_scalar(dp_, sq, ReduceOp::sum);
  if (tp_split) sq = all_reduce_scalar(*tp_, sq, ReduceOp::sum);
  if (pp_) sq = all_reduce_scalar(*pp_, sq, ReduceOp::sum);
  const double norm = std::sqrt(sq) / scaling.scale;
  if (!std::isfinite(norm) && scaling.skip_nonfinite) {
    if (stage_ >= 2) {
      grad_shard_.zero_();
    } else {
      params_.zero_grads();
    }
    return norm;
  }
  TS_CHECK(std::isfinite(norm), "gradient norm is ", norm, " at step ", t_ + 1,
           ": lower train.lr, or raise train.warmup_steps");
  ++t_;
  AdamWStep s{static_cast<float>(lr),
              static_cast<float>(config_.beta1),
              static_cast<float>(config_.beta2),
              static_cast<float>(config_.eps),
              static_cast<float>(config_.weight_decay),
              t_,
              static_cast<float>(clip_coefficient(norm, static_cast<float>(config_.grad_clip)) /
                                 scaling.scale)};

  // Each entry's part of this rank's chunks, with its own weight decay, in one multi-tensor step.
  std::vector<AdamWTensors> sets;
  for (const Segment& g : segments_) {
    const int64_t at = g.lo - chunk_offset(g.unit), n = g.hi - g.lo;
    const int64_t m_at = shard_offset(g.unit) + at;
    sets.push_back({param_chunk(g.unit).carve(at, {n}), exp_avg_.carve(m_at, {n}),
                    exp_avg_sq_.carve(m_at, {n}), grad_chunk(g.unit).carve(at, {n}),
                    g.entry->weight_decay});
  }
  adamw_update(sets, s);

  if (stage_ == 1 || stage_ == 2) {
    std::vector<CommHandle> gathers;
    for (int u = 0; u < nunits; ++u)
      gathers.push_back(dp_.all_gather_async(params_.unit_params(u), param_chunk(u)));
    for (CommHandle& h : gathers) h.wait();
  }
  if (stage_ >= 2) {
    grad_shard_.zero_();
  } else {
    params_.zero_grads();
  }
  return norm;
}

ModelStateBytes DistributedAdamW::state_bytes() const {
  auto held = [](const Tensor& t) -> uint64_t {
    return t.defined() && !t.storage()->released() ? t.nbytes() : 0;
  };
  ModelStateBytes b;
  for (size_t u = 0; u < params_.units().size(); ++u) {
    b.params += held(params_.unit_params(u));
    b.grads += held(params_.unit_grads(u));
  }
  b.params += held(param_shard_);
  b.grads += held(grad_shard_);
  b.optimizer = held(exp_avg_) + held(exp_avg_sq_);
  return b;
}

// --- Checkpoints -------------------------------------------------------------------------------

void DistributedAdamW::gather_moments(Tensor& exp_avg, Tensor& exp_avg_sq) {
  exp_avg = Tensor::empty({params_.total()}, DType::f32);
  exp_avg_sq = Tensor::empty({params_.total()}, DType::f32);
  const auto& units = params_.units();
  for (const auto& [full, shard] : {std::pair{&exp_avg, &exp_avg_}, {&exp_avg_sq, &exp_avg_sq_}}) {
    for (size_t u = 0; u < units.size(); ++u) {
      const int ui = static_cast<int>(u);
      Tensor local = shard->carve(shard_offset(ui), {chunk_numel(ui)}).to(Device::cpu());
      Tensor out = full->carve(units[u].offset, {units[u].numel});
      if (shards_ == 1) {
        out.copy_from(local);
      } else {
        dp_.all_gather(out, local);
      }
    }
  }
}

Tensor DistributedAdamW::checkpoint_chunk(int unit, int kind) const {
  TS_CHECK(kind >= 0 && kind <= 2, "checkpoint_chunk: kind ", kind, " is not 0, 1 or 2");
  const ParameterUnit& u = params_.units().at(unit);
  const int64_t n = u.numel / dp_.size(), lo = dp_.rank() * n;
  Tensor view;
  if (kind == 0) {
    view = stage_ == 3 ? param_shard_.carve(shard_offset(unit), {n})
                       : params_.unit_params(unit).carve(lo, {n});
  } else {
    // Stage 0 keeps the whole unit's moments; stages 1-3 exactly this chunk.
    const int64_t at = shard_offset(unit) + (stage_ == 0 ? lo : 0);
    view = (kind == 1 ? exp_avg_ : exp_avg_sq_).carve(at, {n});
  }
  return view.to(Device::cpu());
}

void DistributedAdamW::load_moments(const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  exp_avg.expect("exp_avg", {params_.total()}, DType::f32);
  exp_avg_sq.expect("exp_avg_sq", {params_.total()}, DType::f32);
  const auto& units = params_.units();
  for (size_t u = 0; u < units.size(); ++u) {
    const int ui = static_cast<int>(u);
    const int64_t from = units[u].offset + chunk_offset(ui);
    exp_avg_.carve(shard_offset(ui), {chunk_numel(ui)})
        .copy_from(exp_avg.carve(from, {chunk_numel(ui)}));
    exp_avg_sq_.carve(shard_offset(ui), {chunk_numel(ui)})
        .copy_from(exp_avg_sq.carve(from, {chunk_numel(ui)}));
  }
}

}  // namespace tessera::parallel
