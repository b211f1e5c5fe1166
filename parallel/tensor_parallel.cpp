#include "parallel/tensor_parallel.h"

#include <cstring>

namespace tessera::parallel {
namespace {

// full viewed as (outer, blocks, parts, piece, inner) along split.dim.
struct Layout {
  int64_t outer = 1, blocks = 1, parts = 1, piece = 1, inner = 1;
};

Layout layout_of(const Shape& full, const TpSplit& s) {
  TS_CHECK(s.dim >= 0 && s.dim < static_cast<int>(full.size()), "TpSplit dim ", s.dim,
           " outside a tensor of shape ", shape_str(full));
  Layout l;
  for (int d = 0; d < s.dim; ++d) l.outer *= full[d];
  for (size_t d = s.dim + 1; d < full.size(); ++d) l.inner *= full[d];
  l.blocks = s.blocks;
  l.parts = s.parts;
  const int64_t extent = full[s.dim];
  TS_CHECK(s.blocks > 0 && s.parts > 0 && extent % (s.blocks * s.parts) == 0,
           "tensor parallelism: dimension ", s.dim, " of ", shape_str(full), " (", extent,
           ") does not split into ", s.blocks, " blocks of ", s.parts, " parts");
  l.piece = extent / (s.blocks * s.parts);
  return l;
}

}  // namespace

Shape tp_local_shape(const Shape& full_shape, const TpSplit& split) {
  if (split.replicated()) return full_shape;
  const Layout l = layout_of(full_shape, split);
  Shape local = full_shape;
  local[split.dim] = l.blocks * l.piece;
  return local;
}

Shape tp_full_shape(const Shape& local_shape, const TpSplit& split) {
  if (split.replicated()) return local_shape;
  TS_CHECK(split.dim >= 0 && split.dim < static_cast<int>(local_shape.size()), "TpSplit dim ",
           split.dim, " outside a tensor of shape ", shape_str(local_shape));
  Shape full = local_shape;
  full[split.dim] *= split.parts;
  return full;
}

Tensor tp_cut(const Tensor& full, const TpSplit& split) {
  TS_CHECK(full.dtype() == DType::f32 && full.is_cpu(), "tp_cut takes f32 cpu tensors");
  if (split.replicated()) return full.to(Device::cpu());
  const Layout l = layout_of(full.shape(), split);
  Tensor local = Tensor::empty(tp_local_shape(full.shape(), split), DType::f32);
  const float* src = full.data<float>();
  float* dst = local.data<float>();
  const int64_t run = l.piece * l.inner;  // contiguous elements of one piece
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t b = 0; b < l.blocks; ++b) {
      const int64_t from = ((o * l.blocks + b) * l.parts + split.index) * run;
      const int64_t to = (o * l.blocks + b) * run;
      std::memcpy(dst + to, src + from, static_cast<size_t>(run) * sizeof(float));
    }
  return local;
}

Tensor tp_join(const Tensor& parts, const TpSplit& split, const Shape& full_shape) {
  TS_CHECK(parts.dtype() == DType::f32 && parts.is_cpu(), "tp_join takes f32 cpu tensors");
  TS_CHECK_EQ(parts.numel(), shape_numel(full_shape), "tp_join: the parts of ",
              shape_str(full_shape));
  Tensor full = Tensor::empty(full_shape, DType::f32);
  if (split.replicated()) {
    full.copy_from(parts);
    return full;
  }
  const Layout l = layout_of(full_shape, split);
  const int64_t run = l.piece * l.inner;
  const int64_t part_numel = l.outer * l.blocks * run;
  const float* src = parts.data<float>();
  float* dst = full.data<float>();
  for (int64_t r = 0; r < l.parts; ++r)
    for (int64_t o = 0; o < l.outer; ++o)
      for (int64_t b = 0; b < l.blocks; ++b) {
        const int64_t from = r * part_numel + (o * l.blocks + b) * run;
        const int64_t to = ((o * l.blocks + b) * l.parts + r) * run;
        std::memcpy(dst + to, src + from, static_cast<size_t>(run) * sizeof(float));
      }
  return full;
}

}  // namespace tessera::parallel
