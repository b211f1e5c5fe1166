#include "core/parameters.h"

namespace tessera {

void ParameterSet::add(const std::string& name, const Shape& shape, bool weight_decay) {
  TS_CHECK(!flat_params_.defined(), "parameter '", name, "' added after allocate()");
  TS_CHECK(index_.find(name) == index_.end(), "parameter '", name, "' registered twice");
  constexpr int64_t kAlign = 16;  // floats: 64 bytes
  total_ = (total_ + kAlign - 1) / kAlign * kAlign;
  index_[name] = entries_.size();
  entries_.push_back({name, shape, weight_decay, total_});
  total_ += shape_numel(shape);
  count_ += shape_numel(shape);
}

void ParameterSet::allocate(Device device) {
  flat_params_ = Tensor::zeros({total_}, DType::f32, device);
  flat_grads_ = Tensor::zeros({total_}, DType::f32, device);
}

const ParameterEntry& ParameterSet::entry(const std::string& name) const {
  auto it = index_.find(name);
  TS_CHECK(it != index_.end(), "no parameter named '", name, "'");
  return entries_[it->second];
}

Tensor ParameterSet::param(const std::string& name) const { return param(entry(name)); }
Tensor ParameterSet::grad(const std::string& name) const { return grad(entry(name)); }

}  // namespace tessera
