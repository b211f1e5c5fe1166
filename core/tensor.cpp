#include "core/tensor.h"

#include <cstring>

namespace tessera {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    TS_CHECK_GE(d, 0, "negative extent in shape ", shape_str(shape));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

Storage::Storage(size_t nbytes, Allocator& allocator)
    : data_(allocator.allocate(nbytes)), nbytes_(nbytes), allocator_(allocator) {}

Storage::~Storage() {
  if (data_) allocator_.deallocate(data_, nbytes_);
}

void Storage::release() {
  if (!data_) return;
  allocator_.deallocate(data_, nbytes_);
  data_ = nullptr;
}

void Storage::materialize() {
  if (!data_) data_ = allocator_.allocate(nbytes_);
}

Tensor::Tensor(std::shared_ptr<Storage> storage, size_t offset, Shape shape, DType dtype)
    : storage_(std::move(storage)),
      offset_(offset),
      shape_(std::move(shape)),
      numel_(shape_numel(shape_)),
      dtype_(dtype) {}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  return Tensor(std::make_shared<Storage>(nbytes, allocator_for(device)), 0, shape, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

int64_t Tensor::size(int64_t i) const {
  const int64_t d = dim();
  TS_CHECK(i >= -d && i < d, "dimension ", i, " out of range for shape ", shape_str(shape_));
  return shape_[i < 0 ? i + d : i];
}

Tensor Tensor::view(const Shape& shape) const {
  TS_CHECK_EQ(shape_numel(shape), numel_, "view ", shape_str(shape), " of ", shape_str(shape_));
  return Tensor(storage_, offset_, shape, dtype_);
}

Tensor Tensor::narrow(int64_t start, int64_t length) const {
  TS_CHECK(dim() >= 1 && start >= 0 && length >= 0 && start + length <= shape_[0], "narrow(", start,
           ", ", length, ") of shape ", shape_str(shape_));
  Shape s = shape_;
  s[0] = length;
  const int64_t row = shape_[0] ? numel_ / shape_[0] : 0;
  return Tensor(storage_, offset_ + start * row * dtype_size(dtype_), s, dtype_);
}

Tensor Tensor::carve(int64_t elem_offset, const Shape& shape) const {
  const int64_t n = shape_numel(shape);
  TS_CHECK(elem_offset >= 0 && elem_offset + n <= numel_, "carve ", shape_str(shape), " at ",
           elem_offset, " from ", numel_, " elements");
  return Tensor(storage_, offset_ + elem_offset * dtype_size(dtype_), shape, dtype_);
}

void Tensor::zero_() {
  if (numel_ > 0) device_memset_zero(raw(), device(), nbytes());
}

void Tensor::copy_from(const Tensor& src) {
  TS_CHECK(dtype_ == src.dtype_, "copy ", dtype_name(src.dtype_), " into ", dtype_name(dtype_));
  TS_CHECK_EQ(numel_, src.numel_, "copy ", shape_str(src.shape_), " into ", shape_str(shape_));
  if (numel_ > 0) device_memcpy(raw(), device(), src.raw(), src.device(), nbytes());
}

Tensor Tensor::to(Device device) const {
  // From a CUDA device to the host: into page-locked memory (full-speed copies).
  Tensor out =
      device.is_cpu() && this->device().is_cuda()
          ? Tensor(std::make_shared<Storage>(nbytes(), pinned_host_allocator()), 0, shape_, dtype_)
          : empty(shape_, dtype_, device);
  out.copy_from(*this);
  return out;
}

void Tensor::expect(const char* name, const Shape& shape, DType dtype) const {
  TS_CHECK(defined(), name, " is undefined, expected ", shape_str(shape));
  TS_CHECK(shape_ == shape, name, " has shape ", shape_str(shape_), ", expected ",
           shape_str(shape));
  TS_CHECK(dtype_ == dtype, name, " has dtype ", dtype_name(dtype_), ", expected ",
           dtype_name(dtype));
}

#ifndef TESSERA_WITH_CUDA
void device_memcpy(void* dst, Device dst_device, const void* src, Device src_device,
                   size_t nbytes) {
  TS_CHECK(dst_device.is_cpu() && src_device.is_cpu(), "copy ", src_device.str(), " -> ",
           dst_device.str(), " needs a CUDA build");
  std::memcpy(dst, src, nbytes);
}
void device_memset_zero(void* dst, Device device, size_t nbytes) {
  TS_CHECK(device.is_cpu(), "memset on ", device.str(), " needs a CUDA build");
  std::memset(dst, 0, nbytes);
}
void device_synchronize(Device device) {
  TS_CHECK(device.is_cpu(), "synchronize ", device.str(), " needs a CUDA build");
}
#endif

}  // namespace tessera
