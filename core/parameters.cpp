#include "core/parameters.h"

namespace tessera {
namespace {

constexpr int64_t kAlign = 16;  // floats: one 64-byte line

int64_t round_up(int64_t n, int64_t m) {
  return (n + m - 1) / m * m;
}

}  // namespace

void ParameterSet::begin_unit(const std::string& name) {
  TS_CHECK(!laid_out_, "parameter unit '", name, "' added after allocate()");
  for (const ParameterUnit& u : units_)
    TS_CHECK(u.name != name, "parameter unit '", name, "' registered twice");
  units_.push_back({name, 0, 0, entries_.size(), entries_.size()});
}

void ParameterSet::add(const std::string& name, const Shape& shape, bool weight_decay,
                       TpSplit split, bool tp_partial) {
  TS_CHECK(!laid_out_, "parameter '", name, "' added after allocate()");
  TS_CHECK(!units_.empty(), "parameter '", name, "' added before begin_unit()");
  TS_CHECK(index_.find(name) == index_.end(), "parameter '", name, "' registered twice");
  ParameterUnit& u = units_.back();
  // Offsets are relative to the unit until allocate() knows where the unit starts.
  const int64_t offset = round_up(u.numel, kAlign);
  index_[name] = entries_.size();
  entries_.push_back(
      {name, shape, weight_decay, static_cast<int>(units_.size() - 1), offset, split, tp_partial});
  u.numel = offset + shape_numel(shape);
  u.end_entry = entries_.size();
  count_ += shape_numel(shape);
}

void ParameterSet::lay_out(int shards) {
  TS_CHECK(!laid_out_, "ParameterSet laid out (or allocated) twice");
  TS_CHECK(shards >= 1, "ParameterSet: shards must be >= 1, got ", shards);
  total_ = 0;
  for (ParameterUnit& u : units_) {
    u.offset = total_;
    u.numel = round_up(std::max<int64_t>(u.numel, 1), kAlign * shards);
    for (size_t i = u.first_entry; i < u.end_entry; ++i) entries_[i].offset += u.offset;
    total_ += u.numel;
  }
  laid_out_ = true;
}

void ParameterSet::allocate(Device device, int shards) {
  lay_out(shards);
  device_ = device;
  for (const ParameterUnit& u : units_) {
    unit_params_.push_back(Tensor::zeros({u.numel}, DType::f32, device));
    unit_grads_.push_back(Tensor::zeros({u.numel}, DType::f32, device));
  }
}

const ParameterEntry& ParameterSet::entry(const std::string& name) const {
  auto it = index_.find(name);
  TS_CHECK(it != index_.end(), "no parameter named '", name, "'");
  return entries_[it->second];
}

Tensor ParameterSet::param(const ParameterEntry& e) const {
  TS_CHECK(!unit_params_.empty(), "parameter '", e.name, "' used before allocate()");
  return unit_params_[e.unit].carve(e.offset - units_[e.unit].offset, e.shape);
}

Tensor ParameterSet::grad(const ParameterEntry& e) const {
  TS_CHECK(!unit_grads_.empty(), "gradient of '", e.name, "' used before allocate()");
  return unit_grads_[e.unit].carve(e.offset - units_[e.unit].offset, e.shape);
}

void ParameterSet::zero_grads() {
  for (Tensor& g : unit_grads_)
    if (!g.storage()->released()) g.zero_();
}

Tensor ParameterSet::gather_flat(bool grads) const {
  Tensor out = Tensor::empty({total_}, DType::f32);
  for (size_t u = 0; u < units_.size(); ++u)
    out.carve(units_[u].offset, {units_[u].numel})
        .copy_from(grads ? unit_grads_[u] : unit_params_[u]);
  return out;
}

}  // namespace tessera
