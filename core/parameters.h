// ParameterSet: a model's named parameters grouped into units (one per layer: the embedding,
// each transformer block, the final norm), each unit carved from one flat fp32 allocation, with
// its gradients carved the same way from a second one. A ZeRO shard of a unit is a contiguous
// slice of it, the optimizer runs over the flat buffers, and ZeRO-3 can release a whole unit's
// storage between uses (views stay valid handles, see Storage::release).
//
// Units are laid out one after another in a "flat index space": unit u covers
// [unit.offset, unit.offset + unit.numel), each padded so that it splits into `shards` equal
// chunks of whole 64-byte lines. Padding stays zero in parameters and gradients.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace tessera {

// How a tensor-parallel rank's parameter is cut from the full one (Megatron's partition_dim):
// dimension `dim` of the full tensor holds `blocks` equal blocks (3 for c_attn's q, k, v), each cut
// into `parts` equal pieces; rank `index` keeps piece `index` of every block, in block order.
// dim = -1: replicated (every tensor-parallel rank holds the whole tensor).
struct TpSplit {
  int dim = -1;
  int parts = 1;
  int index = 0;
  int blocks = 1;
  bool replicated() const { return dim < 0 || parts == 1; }
};

struct ParameterEntry {
  std::string name;         // Hugging Face GPT-2 name, e.g. "transformer.h.0.attn.c_attn.weight"
  Shape shape;              // this rank's part
  bool weight_decay;        // AdamW decays matrices and embeddings, not biases or norms
  int unit;                 // index into ParameterSet::units()
  int64_t offset;           // elements from the start of the flat index space (64-byte aligned)
  TpSplit split;            // how `shape` is cut from the full tensor
  bool tp_partial = false;  // sequence parallelism: each tp rank's gradient is a partial sum
};

struct ParameterUnit {
  std::string name;        // "embedding", "h.0", ..., "ln_f"
  int64_t offset = 0;      // start in the flat index space
  int64_t numel = 0;       // with padding: a multiple of 16 · shards
  size_t first_entry = 0;  // entries [first_entry, end_entry) belong to this unit
  size_t end_entry = 0;
};

// What a model tells a sharding engine around each unit's use (ZeRO-3 gathers parameters in
// acquire and frees them in release; every stage starts reducing a unit's gradients in
// grads_ready). A model without hooks uses its parameters as they are.
class UnitHooks {
 public:
  enum class Pass : uint8_t { forward, backward };
  virtual ~UnitHooks() = default;
  // The unit's parameters are read from now until release(unit).
  virtual void acquire(int unit, Pass pass) = 0;
  virtual void release(int unit) = 0;
  // This micro-batch's backward will not touch the unit's gradients again.
  virtual void grads_ready(int unit) = 0;
  // Whether parameters stay in memory between release and the next acquire (ZeRO-3 frees them:
  // a model must not keep copies of them then).
  virtual bool keeps_parameters() const { return true; }
};

class ParameterSet {
 public:
  // Starts a new unit; later add()s belong to it. Throws Error after allocate() or on a
  // duplicate name.
  void begin_unit(const std::string& name);
  // Registers a parameter (this rank's part of it, cut by `split`) in the current unit; throws
  // Error after allocate(), before any begin_unit() or on a duplicate name.
  void add(const std::string& name, const Shape& shape, bool weight_decay, TpSplit split = {},
           bool tp_partial = false);
  // Allocates each unit's flat parameter and gradient buffers on `device` (zeros), padding each
  // unit to a multiple of 16 · shards elements. Throws Error unless shards >= 1.
  void allocate(Device device, int shards = 1);
  // The same offsets and padding without any buffer: a layout to read (units, entries, total),
  // whose params and grads do not exist. No add() afterwards.
  void lay_out(int shards = 1);

  const std::vector<ParameterEntry>& entries() const { return entries_; }
  const std::vector<ParameterUnit>& units() const { return units_; }
  const ParameterEntry& entry(const std::string& name) const;
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  // The parameter / its gradient as a view into its unit's buffer; throws Error for unknown names.
  Tensor param(const std::string& name) const { return param(entry(name)); }
  Tensor grad(const std::string& name) const { return grad(entry(name)); }
  Tensor param(const ParameterEntry& e) const;
  Tensor grad(const ParameterEntry& e) const;
  // A unit's whole flat buffer (1-D, numel = unit.numel).
  const Tensor& unit_params(int unit) const { return unit_params_.at(unit); }
  const Tensor& unit_grads(int unit) const { return unit_grads_.at(unit); }

  // Elements of the flat index space (with padding) and of the parameters alone.
  int64_t total() const { return total_; }
  int64_t count() const { return count_; }
  Device device() const { return device_; }
  // Zeroes every gradient buffer that is not released.
  void zero_grads();
  // Every parameter (grads = false) or gradient as one (total()) f32 cpu tensor in flat order.
  Tensor gather_flat(bool grads) const;

 private:
  std::vector<ParameterEntry> entries_;
  std::vector<ParameterUnit> units_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
  int64_t count_ = 0;
  Device device_ = Device::cpu();
  bool laid_out_ = false;
  std::vector<Tensor> unit_params_, unit_grads_;
};

}  // namespace tessera
