#include "model/gpt2.h"

#include <cmath>
#include <random>

#include "kernels/classifier.h"
#include "kernels/convert.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"
#include "parallel/pipeline.h"
#include "parallel/tensor_parallel.h"

namespace tessera {
namespace {

// Normal samples from mt19937_64 by Box-Muller: unlike std::normal_distribution, the same on
// every standard library.
class NormalSampler {
 public:
  explicit NormalSampler(uint64_t seed) : rng_(seed) {}
  float next(float stddev) {
    if (has_spare_) {
      has_spare_ = false;
      return spare_ * stddev;
    }
    constexpr double kTwoPi = 6.283185307179586;
    const double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;          // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(kTwoPi * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(kTwoPi * u2)) * stddev;
  }

 private:
  std::mt19937_64 rng_;
  float spare_ = 0.0f;
  bool has_spare_ = false;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Mean of a f32 tensor (copied to the host first if need be), summed in float64 in order.
double mean_of(const Tensor& t) {
  const Tensor host = t.is_cpu() ? t : t.to(Device::cpu());
  const float* p = host.data<float>();
  double sum = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) sum += p[i];
  return sum / static_cast<double>(t.numel());
}

}  // namespace

void Gpt2Config::validate() const {
  TS_CHECK(n_layer > 0, "model.n_layer must be positive, got ", n_layer);
  TS_CHECK(n_head > 0, "model.n_head must be positive, got ", n_head);
  TS_CHECK(d_model > 0 && d_model % n_head == 0, "model.d_model (", d_model,
           ") must be a positive multiple of model.n_head (", n_head, ")");
  TS_CHECK(vocab_size > 0, "model.vocab_size must be positive, got ", vocab_size);
  TS_CHECK(max_seq_len > 0, "model.max_seq_len must be positive, got ", max_seq_len);
}

int64_t Gpt2Config::num_params() const {
  const int64_t c = d_model;
  const int64_t per_block = 12 * c * c + 13 * c;
  return vocab_size * c + max_seq_len * c + n_layer * per_block + 2 * c;
}

double Gpt2Config::train_flops_per_token(int64_t t) const {
  const double c = static_cast<double>(d_model);
  const double matmul_params = static_cast<double>(n_layer) * 12.0 * c * c;
  return 6.0 * matmul_params + 6.0 * static_cast<double>(vocab_size) * c +
         12.0 * static_cast<double>(n_layer) * static_cast<double>(t) * c;
}

Gpt2::Gpt2(const Gpt2Config& config, const Gpt2Layout& layout, Unallocated)
    : config_(config),
      tp_(layout.tp),
      pp_rank_(layout.pp_rank),
      pp_size_(layout.pp_size),
      layers_per_stage_(layout.layers_per_stage) {
  par_ = {tp_, layout.sequence_parallel};
  config_.validate();
  const int tp = tp_size(), r = tp_rank();
  TS_CHECK(config_.n_head % tp == 0, "model.n_head (", config_.n_head,
           ") must be a multiple of parallel.tp (", tp,
           "): each tensor-parallel rank takes whole heads");
  TS_CHECK(config_.vocab_size % tp == 0, "model.vocab_size (", config_.vocab_size,
           ") must be a multiple of parallel.tp (", tp,
           "): each tensor-parallel rank takes an equal slice of the vocabulary");
  TS_CHECK(layout.virtual_stages == 1 || (layout.virtual_stages > 1 && pp_size_ > 1),
           "parallel.virtual_stages (", layout.virtual_stages,
           ") must be 1, or more with parallel.pp > 1");
  int64_t base = 0;
  for (int k = 0; k < layout.virtual_stages; ++k) {
    const parallel::StageLayers layers =
        parallel::stage_layers(config_.n_layer, k * pp_size_ + pp_rank_,
                               pp_size_ * layout.virtual_stages, layout.layers_per_stage);
    chunks_.push_back({layers, base});
    base += layers.end - layers.first;
  }
  heads_local_ = config_.n_head / tp;
  const int64_t c = config_.d_model, v_local = config_.vocab_size / tp;
  vocab_shard_.start = r * v_local;
  vocab_shard_.size = config_.vocab_size;
  if (tp_ && tp > 1) {
    // The vocabulary-parallel softmax: row maxima and (sum, target logit) pairs over tp.
    auto reduce = [comm = tp_](parallel::ReduceOp op) {
      return [comm, op](float* values, int64_t n) {
        Tensor t = Tensor::empty({n}, DType::f32);
        std::copy(values, values + n, t.data<float>());
        comm->all_reduce(t, op);
        std::copy(t.data<float>(), t.data<float>() + n, values);
      };
    };
    vocab_shard_.all_reduce_max = reduce(parallel::ReduceOp::max);
    vocab_shard_.all_reduce_sum = reduce(parallel::ReduceOp::sum);
  }
  const TpSplit vocab_rows{0, tp, r, 1};
  auto next_unit = [&] { return static_cast<int>(params_.units().size()); };
  if (is_first_stage()) {
    unit_wte_ = next_unit();
    params_.begin_unit("wte");
    params_.add("transformer.wte.weight", {v_local, c}, true, vocab_rows);
    unit_wpe_ = next_unit();
    params_.begin_unit("wpe");
    params_.add("transformer.wpe.weight", {config_.max_seq_len, c}, true);
  }
  unit_first_block_ = next_unit();
  for (const Chunk& chunk : chunks_)
    for (int64_t l = chunk.layers.first; l < chunk.layers.end; ++l) {
      params_.begin_unit("h." + std::to_string(l));
      BlockWeights::register_params(params_, block_prefix(l), c, r, tp, par_.sequence_split());
    }
  if (is_last_stage()) {
    unit_lnf_ = next_unit();
    params_.begin_unit("ln_f");
    params_.add("transformer.ln_f.weight", {c}, false, {}, par_.sequence_split());
    params_.add("transformer.ln_f.bias", {c}, false, {}, par_.sequence_split());
    if (!is_first_stage()) {
      unit_head_ = next_unit();
      params_.begin_unit("head");
      params_.add("transformer.wte.weight", {v_local, c}, true, vocab_rows);
    }
  }
}

ParameterSet Gpt2::parameter_layout(const Gpt2Config& config, const Gpt2Layout& layout) {
  Gpt2 part(config, layout, Unallocated{});
  part.params_.lay_out(layout.param_shards);
  return part.params_;
}

Gpt2::Gpt2(const Gpt2Config& config, Device device, Gpt2Layout layout)
    : Gpt2(config, layout, Unallocated{}) {
  params_.allocate(device, layout.param_shards);

  auto bind = [&](const char* name, Tensor& p, Tensor& g) {
    p = params_.param(name);
    g = params_.grad(name);
  };
  if (is_first_stage()) {
    bind("transformer.wte.weight", wte_, dwte_);
    bind("transformer.wpe.weight", wpe_, dwpe_);
  }
  if (is_last_stage()) {
    bind("transformer.ln_f.weight", lnf_w_, dlnf_w_);
    bind("transformer.ln_f.bias", lnf_b_, dlnf_b_);
    if (unit_head_ >= 0) bind("transformer.wte.weight", head_, dhead_);
  }
  for (const Chunk& chunk : chunks_)
    for (int64_t l = chunk.layers.first; l < chunk.layers.end; ++l) {
      blocks_.push_back(BlockWeights::bind(params_, block_prefix(l), false));
      block_grads_.push_back(BlockWeights::bind(params_, block_prefix(l), true));
    }
}

ParameterSet Gpt2::whole_parameters(const Gpt2Config& config) {
  ParameterSet whole;
  whole.begin_unit("all");
  whole.add("transformer.wte.weight", {config.vocab_size, config.d_model}, true);
  whole.add("transformer.wpe.weight", {config.max_seq_len, config.d_model}, true);
  for (int64_t l = 0; l < config.n_layer; ++l)
    BlockWeights::register_params(whole, "transformer.h." + std::to_string(l), config.d_model);
  whole.add("transformer.ln_f.weight", {config.d_model}, false);
  whole.add("transformer.ln_f.bias", {config.d_model}, false);
  return whole;
}

int Gpt2::owner_stage(const std::string& name) const {
  const std::string prefix = "transformer.h.";
  if (name.rfind(prefix, 0) == 0) {
    const int64_t layer = std::stoll(name.substr(prefix.size()));
    const int stages = pp_size_ * chunks();  // virtual stage vs lives on rank vs % pp_size_
    for (int vs = 0; vs < stages; ++vs) {
      const parallel::StageLayers l =
          parallel::stage_layers(config_.n_layer, vs, stages, layers_per_stage_);
      if (layer >= l.first && layer < l.end) return vs % pp_size_;
    }
    TS_THROW("parameter '", name, "': layer ", layer, " outside the model");
  }
  return name.rfind("transformer.ln_f.", 0) == 0 ? pp_size_ - 1 : 0;
}

std::string Gpt2::block_prefix(int64_t layer) const {
  return "transformer.h." + std::to_string(layer);
}

bool Gpt2::rounds_weights() const {
  return gemm_ != DType::f32 && (hooks_ == nullptr || hooks_->keeps_parameters());
}

const BlockWeights& Gpt2::round_block(int64_t index) const {
  if (!rounds_weights()) return blocks_[index];
  if (!has_rounded_copies()) {
    rounded_units_.clear();
    rounded_blocks_.clear();
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const ParameterUnit& unit = params_.units()[block_unit(static_cast<int64_t>(i))];
      const Tensor rounded = Tensor::empty({unit.numel}, gemm_, params_.device());
      BlockWeights w = blocks_[i];  // the GEMM weights' views moved to the rounded buffer
      for (size_t k = unit.first_entry; k < unit.end_entry; ++k) {
        const ParameterEntry& e = params_.entries()[k];
        Tensor* view = e.name.ends_with(".attn.c_attn.weight")   ? &w.attn_w
                       : e.name.ends_with(".attn.c_proj.weight") ? &w.proj_w
                       : e.name.ends_with(".mlp.c_fc.weight")    ? &w.fc_w
                       : e.name.ends_with(".mlp.c_proj.weight")  ? &w.fcproj_w
                                                                 : nullptr;
        if (view) *view = rounded.carve(e.offset - unit.offset, e.shape);
      }
      rounded_units_.push_back(rounded);
      rounded_blocks_.push_back(w);
    }
  }
  convert(rounded_units_[index], params_.unit_params(block_unit(index)));
  return rounded_blocks_[index];
}

const BlockWeights& Gpt2::gemm_weights(int64_t index) const {
  return rounds_weights() && has_rounded_copies() ? rounded_blocks_[index] : blocks_[index];
}

bool Gpt2::has_rounded_copies() const {
  return !rounded_units_.empty() && rounded_units_.front().dtype() == gemm_;
}

void Gpt2::acquire(int unit, UnitHooks::Pass pass) const {
  if (hooks_) hooks_->acquire(unit, pass);
}
void Gpt2::release(int unit) const {
  if (hooks_) hooks_->release(unit);
}
void Gpt2::grads_ready(int unit) const {
  if (hooks_) hooks_->grads_ready(unit);
}

void Gpt2::init_weights(uint64_t seed) {
  // The whole model's tensors in order (registered, never allocated): every layout draws the
  // same sequence and keeps the tensors, and the parts of them, that it holds.
  const ParameterSet whole = whole_parameters(config_);

  NormalSampler normal(seed);
  const float residual_std = 0.02f / std::sqrt(2.0f * static_cast<float>(config_.n_layer));
  for (const ParameterEntry& w : whole.entries()) {
    const bool is_norm = w.name.find(".ln_") != std::string::npos;
    const bool drawn = !ends_with(w.name, ".bias") && !is_norm;
    Tensor full;
    if (drawn) {
      const float std = ends_with(w.name, "c_proj.weight") ? residual_std : 0.02f;
      full = Tensor::empty(w.shape, DType::f32);
      float* d = full.data<float>();
      for (int64_t i = 0; i < full.numel(); ++i) d[i] = normal.next(std);
    }
    if (!params_.contains(w.name)) continue;
    const ParameterEntry& e = params_.entry(w.name);
    Tensor p = params_.param(e);
    if (drawn) {
      p.copy_from(parallel::tp_cut(full, e.split));
    } else if (ends_with(w.name, ".bias")) {  // every bias, layernorms' included
      p.zero_();
    } else {  // layernorm weights
      Tensor ones = Tensor::empty(p.shape(), DType::f32);
      float* d = ones.data<float>();
      for (int64_t i = 0; i < ones.numel(); ++i) d[i] = 1.0f;
      p.copy_from(ones);
    }
  }
}

Gpt2Activations Gpt2::make_activations(int64_t batch, int64_t seq_len, bool recompute,
                                       int chunk) const {
  TS_CHECK(batch > 0, "batch size must be positive, got ", batch);
  TS_CHECK(chunk >= 0 && chunk < chunks(), "make_activations: chunk ", chunk, " of ", chunks());
  TS_CHECK(seq_len > 0 && seq_len <= config_.max_seq_len, "sequence length ", seq_len,
           " must be in [1, model.max_seq_len = ", config_.max_seq_len, "]");
  const Device dev = params_.device();
  const parallel::StageLayers& own = chunks_[chunk].layers;
  const int64_t b = batch, t = seq_len, c = config_.d_model, layers = own.end - own.first;
  TS_CHECK(!par_.sequence_split() || (b * t) % tp_size() == 0, "sequence parallelism splits the ",
           b * t,
           " tokens of a micro-batch (sequences per rank x seq_len) over parallel.tp = ", tp_size(),
           ": make them a multiple of it");
  const Shape stream = par_.sequence_split() ? Shape{b * t / tp_size(), c} : Shape{b, t, c};
  auto f32 = [&](const Shape& s) { return Tensor::empty(s, DType::f32, dev); };
  // Activations and gradients only GEMMs read, in the GEMMs' type (f32 with sequence parallelism,
  // whose all-gathers move f32).
  const DType gemm_input = par_.sequence_split() ? DType::f32 : gemm_;
  Gpt2Activations a;
  a.batch = b;
  a.seq_len = t;
  a.chunk = chunk;
  a.recompute = recompute;
  a.tokens = Tensor::empty({b, t}, DType::i32, dev);
  for (int64_t l = 0; l <= layers; ++l) a.resid.push_back(f32(stream));
  for (int64_t l = 0; l < (recompute ? 1 : layers); ++l)
    a.block.push_back(BlockActivations::allocate(b, t, c, config_.n_head, dev, par_, gemm_input));
  if (ends_model(a)) {
    a.lnf = f32({b, t, c});
    a.lnf_mean = f32({shape_numel(stream) / c});
    a.lnf_rstd = f32({shape_numel(stream) / c});
    a.targets = Tensor::empty({b, t}, DType::i32, dev);
    a.losses = f32({b * t});
    a.dlnf = f32({b, t, c});
  }
  a.scratch = BlockScratch::allocate(b, t, c, dev, par_, gemm_input);
  a.dresid = f32(stream);
  if (gemm_input != DType::f32) a.dresid_rounded = Tensor::empty(stream, gemm_input, dev);
  return a;
}

void Gpt2::forward(Gpt2Activations& a, const Tensor& tokens) const {
  using Pass = UnitHooks::Pass;
  if (starts_model(a)) {
    TS_CHECK(tokens.dim() == 2 && tokens.size(0) == a.batch && tokens.size(1) == a.seq_len,
             "tokens ", shape_str(tokens.shape()), " do not match activations for (", a.batch, ", ",
             a.seq_len, ")");
    a.tokens.copy_from(tokens);
    acquire(unit_wte_, Pass::forward);
    acquire(unit_wpe_, Pass::forward);
    // Vocabulary-parallel: each rank adds the rows it holds (positions on rank 0), then g.
    if (par_.sequence_split()) {  // g is a reduce-scatter of rows: each rank keeps its rows
      embedding_forward(a.scratch.btc, a.tokens, wte_, tp_rank() == 0 ? wpe_ : Tensor(),
                        vocab_shard_.start, vocab_shard_.size);
      parallel::sp_reduce_scatter(*tp_, a.resid[0], a.scratch.btc);
    } else {
      embedding_forward(a.resid[0], a.tokens, wte_, tp_rank() == 0 ? wpe_ : Tensor(),
                        vocab_shard_.start, vocab_shard_.size);
      if (tp_) parallel::tp_all_reduce(*tp_, a.resid[0]);
    }
    release(unit_wpe_);
    release(unit_wte_);
  }
  const Chunk& chunk = chunks_[a.chunk];
  for (int64_t i = 0; i < chunk.layers.end - chunk.layers.first; ++i) {
    const int64_t index = chunk.base + i;
    BlockActivations& acts = a.block[a.recompute ? 0 : i];
    acquire(block_unit(index), Pass::forward);
    block_forward(a.resid[i + 1], acts, a.scratch, a.resid[i], round_block(index), heads_local_,
                  par_, gemm_);
    release(block_unit(index));
  }
  if (ends_model(a)) {
    acquire(unit_lnf_, Pass::forward);
    if (par_.sequence_split()) {  // the LM head sees every row: f is an all-gather
      layernorm_forward(a.scratch.rows, a.lnf_mean, a.lnf_rstd, a.resid.back(), lnf_w_, lnf_b_);
      parallel::sp_all_gather(*tp_, a.lnf, a.scratch.rows);
    } else {
      layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, a.resid.back(), lnf_w_, lnf_b_);
    }
    release(unit_lnf_);
  }
}

double Gpt2::loss(Gpt2Activations& a, const Tensor& targets) const {
  TS_CHECK(ends_model(a), "Gpt2::loss on pipeline stage ", pp_rank_, " of ", pp_size_, ", chunk ",
           a.chunk, " of ", chunks(), ": only the last virtual stage has the LM head");
  const int head = unit_head_ >= 0 ? unit_head_ : unit_wte_;
  a.targets.copy_from(targets);
  acquire(head, UnitHooks::Pass::forward);
  classifier_forward(a.losses, a.lnf, head_w(), a.targets, vocab_shard_, gemm_);
  release(head);
  return mean_of(a.losses);
}

double Gpt2::backward(Gpt2Activations& a, const Tensor& targets, float dloss) {
  using Pass = UnitHooks::Pass;
  double loss = 0.0;
  // dresid's 16-bit copy, written by each layernorm backward for the GEMMs after it (a stage that
  // receives dresid from the next one rounds it first: the same bits, so that the bias gradients
  // that sum it do not depend on the pipeline's split).
  Tensor* rounded = a.dresid_rounded.defined() ? &a.dresid_rounded : nullptr;
  if (ends_model(a)) {
    // With one stage the LM head is wte itself: its unit stays acquired from the head's
    // backward, the first, to the embedding's, the last.
    const int head = unit_head_ >= 0 ? unit_head_ : unit_wte_;
    a.targets.copy_from(targets);
    acquire(head, Pass::backward);
    classifier_forward_backward(a.losses, a.dlnf, head_grad(), a.lnf, head_w(), a.targets, dloss,
                                vocab_shard_, gemm_);
    // f's backward: every rank's vocabulary rows contribute (summed into each rank's rows with
    // sequence parallelism).
    Tensor dlnf = a.dlnf;
    if (par_.sequence_split()) {
      parallel::sp_reduce_scatter(*tp_, a.scratch.rows, a.dlnf);
      dlnf = a.scratch.rows;
    } else if (tp_) {
      parallel::tp_all_reduce(*tp_, a.dlnf);
    }
    if (unit_head_ >= 0) {
      release(unit_head_);
      grads_ready(unit_head_);
    }
    acquire(unit_lnf_, Pass::backward);
    layernorm_backward(a.dresid, dlnf_w_, dlnf_b_, dlnf, a.resid.back(), lnf_w_, a.lnf_mean,
                       a.lnf_rstd, Tensor(), rounded);
    release(unit_lnf_);
    grads_ready(unit_lnf_);
    loss = mean_of(a.losses);
  }
  if (rounded && !ends_model(a)) convert(*rounded, a.dresid);
  const Chunk& chunk = chunks_[a.chunk];
  for (int64_t i = chunk.layers.end - chunk.layers.first - 1; i >= 0; --i) {
    const int64_t index = chunk.base + i;
    BlockActivations& acts = a.block[a.recompute ? 0 : i];
    acquire(block_unit(index), Pass::backward);
    if (a.recompute) {  // rebuild this block's activations from its saved input
      block_forward(a.scratch.dres1, acts, a.scratch, a.resid[i], gemm_weights(index), heads_local_,
                    par_, gemm_);
    }
    block_backward(a.dresid, block_grads_[index], a.scratch, a.dresid, a.resid[i], acts,
                   gemm_weights(index), heads_local_, par_, gemm_,
                   rounded ? a.dresid_rounded : Tensor(), rounded);
    release(block_unit(index));
    grads_ready(block_unit(index));
  }
  if (starts_model(a)) {
    if (!is_last_stage()) acquire(unit_wte_, Pass::backward);
    acquire(unit_wpe_, Pass::backward);
    Tensor demb = a.dresid;
    if (par_.sequence_split()) {  // g's backward: every row's gradient on every rank
      parallel::sp_all_gather(*tp_, a.scratch.btc, a.dresid);
      demb = a.scratch.btc;
    }
    embedding_backward(dwte_, dwpe_, demb, a.tokens, vocab_shard_.start, vocab_shard_.size);
    release(unit_wpe_);
    grads_ready(unit_wpe_);
    release(unit_wte_);
    grads_ready(unit_wte_);
  }
  return loss;
}

void Gpt2::logits(Tensor& out, const Gpt2Activations& a, bool last_only) const {
  TS_CHECK(tp_size() == 1 && pp_size_ == 1,
           "logits of a model split over ranks (parallel.tp = ", tp_size(),
           ", parallel.pp = ", pp_size_, "): gather the weights into one model first");
  acquire(unit_wte_, UnitHooks::Pass::forward);
  if (!last_only) {
    logits_forward(out, a.lnf, wte_);
  } else {
    const int64_t c = config_.d_model;
    Tensor last = Tensor::empty({a.batch, c}, DType::f32, a.lnf.device());
    const Tensor rows = a.lnf.view({a.batch * a.seq_len, c});
    for (int64_t b = 0; b < a.batch; ++b)
      last.narrow(b, 1).copy_from(rows.narrow(b * a.seq_len + a.seq_len - 1, 1));
    logits_forward(out, last, wte_);
  }
  release(unit_wte_);
}

}  // namespace tessera
