// ParameterSet: a model's named parameters carved from one flat fp32 allocation, with their
// gradients carved the same way from a second one. A ZeRO shard of either is a contiguous slice,
// and the optimizer runs over the flat buffers in one pass.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace tessera {

struct ParameterEntry {
  std::string name;   // Hugging Face GPT-2 name, e.g. "transformer.h.0.attn.c_attn.weight"
  Shape shape;
  bool weight_decay;  // AdamW decays matrices and embeddings, not biases or norms
  int64_t offset;     // elements from the start of the flat buffers (64-byte aligned)
};

class ParameterSet {
 public:
  // Registers a parameter; throws Error after allocate() or on a duplicate name.
  void add(const std::string& name, const Shape& shape, bool weight_decay);
  // Allocates the flat parameter and gradient buffers on `device`; gradients start at zero.
  void allocate(Device device);

  const std::vector<ParameterEntry>& entries() const { return entries_; }
  // The parameter / its gradient as a view into the flat buffers; throws Error for unknown names.
  Tensor param(const std::string& name) const;
  Tensor grad(const std::string& name) const;
  Tensor param(const ParameterEntry& e) const { return flat_params_.carve(e.offset, e.shape); }
  Tensor grad(const ParameterEntry& e) const { return flat_grads_.carve(e.offset, e.shape); }
  const ParameterEntry& entry(const std::string& name) const;

  // The flat buffers (padding between parameters stays zero).
  Tensor& flat_params() { return flat_params_; }
  Tensor& flat_grads() { return flat_grads_; }
  const Tensor& flat_params() const { return flat_params_; }
  const Tensor& flat_grads() const { return flat_grads_; }
  // Number of parameter elements, without padding.
  int64_t count() const { return count_; }
  void zero_grads() { flat_grads_.zero_(); }

 private:
  std::vector<ParameterEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;  // with padding
  int64_t count_ = 0;
  Tensor flat_params_;
  Tensor flat_grads_;
};

}  // namespace tessera
