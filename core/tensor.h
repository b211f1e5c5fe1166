// Tensor: a contiguous, row-major view (offset, shape, dtype) into a reference-counted Storage.
// Storage owns bytes on one device; views share it. Parameters are carved from one Storage so that
// a ZeRO shard is a contiguous slice of it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/dtype.h"
#include "core/error.h"

namespace tessera {

using Shape = std::vector<int64_t>;

// Number of elements of a shape; throws Error on a negative extent.
int64_t shape_numel(const Shape& shape);
// "(2, 3, 4)".
std::string shape_str(const Shape& shape);

// Bytes on one device, freed through the allocator that made them.
class Storage {
 public:
  Storage(size_t nbytes, Allocator& allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // nullptr while released.
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return allocator_.device(); }

  // Gives the bytes back to the allocator but keeps the size, so that views stay valid handles
  // (like FSDP's storage resize to 0): ZeRO-3 frees a gathered layer this way. Data access
  // through a view throws until materialize(). No-op when already released.
  void release();
  // Allocates the bytes again (contents uninitialized) after release(); no-op when present.
  void materialize();
  bool released() const { return data_ == nullptr && nbytes_ > 0; }

 private:
  void* data_;
  size_t nbytes_;
  Allocator& allocator_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // New storage, contents uninitialized.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  // New storage filled with zeros.
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  // Extent of dimension i; negative i counts from the end.
  int64_t size(int64_t i) const;
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  bool is_cpu() const { return device().is_cpu(); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  size_t byte_offset() const { return offset_; }

  // Throws Error when the storage is released (a ZeRO-3 unit used outside acquire/release).
  void* raw() const {
    TS_CHECK(!storage_->released(),
             "data of a tensor whose storage is released (a ZeRO-3 "
             "parameter or gradient used outside its gather)");
    return static_cast<char*>(storage_->data()) + offset_;
  }
  // Typed pointer; throws Error when T does not match dtype().
  template <typename T>
  T* data() const {
    TS_CHECK(defined(), "data<", dtype_name(DTypeOf<T>::value), ">() of an undefined tensor");
    TS_CHECK(DTypeOf<T>::value == dtype_, "tensor holds ", dtype_name(dtype_), ", asked for ",
             dtype_name(DTypeOf<T>::value));
    return static_cast<T*>(raw());
  }

  // Same bytes, another shape with the same numel.
  Tensor view(const Shape& shape) const;
  // Rows [start, start + length) of dimension 0; shares storage.
  Tensor narrow(int64_t start, int64_t length) const;
  // `numel(shape)` elements starting `elem_offset` elements into this tensor; shares storage.
  Tensor carve(int64_t elem_offset, const Shape& shape) const;

  // Sets every element to zero (any device).
  void zero_();
  // Copies src's bytes into this tensor (same dtype and numel; any pair of devices).
  void copy_from(const Tensor& src);
  // A new tensor on `device` holding the same values (in page-locked host memory when a CUDA
  // tensor comes to the CPU: pinned_host_allocator).
  Tensor to(Device device) const;

  // Shape-and-dtype check with a message naming the tensor: throws Error on mismatch.
  void expect(const char* name, const Shape& shape, DType dtype) const;

 private:
  Tensor(std::shared_ptr<Storage> storage, size_t offset, Shape shape, DType dtype);

  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
};

// Copies between devices; the CUDA build implements the device side (core/cuda_memory.cu).
void device_memcpy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
void device_memset_zero(void* dst, Device device, size_t nbytes);
// Waits until every kernel and copy queued on `device` has finished (nothing to wait for on cpu);
// timers read after it measure the work, not its launch.
void device_synchronize(Device device);

}  // namespace tessera
