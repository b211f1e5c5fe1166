// CUDA side of core: device allocation and copies. Every CUDA call is checked (TS_CUDA_CHECK).
#include <cuda_runtime.h>

#include <cstring>

#include "core/allocator.h"
#include "core/cuda_check.h"
#include "core/tensor.h"

namespace tessera {
namespace {

// Direct cudaMalloc/cudaFree per block. The caching allocator that keeps cudaMalloc out of the
// steady-state step is part of the CUDA backend issue; until then this is the honest baseline.
class CudaAllocator final : public Allocator {
 public:
  CudaAllocator(int index) : index_(index) {}  // implicit: the table below lists ordinals
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    void* p = nullptr;
    TS_CUDA_CHECK(cudaSetDevice(index_));
    TS_CUDA_CHECK(cudaMalloc(&p, nbytes));
    return p;
  }
  void deallocate(void* ptr, size_t) override {
    if (ptr) cudaFree(ptr);  // no throw from a destructor path
  }
  Device device() const override { return Device::cuda(index_); }

 private:
  int index_;
};

cudaMemcpyKind copy_kind(Device dst, Device src) {
  if (dst.is_cpu()) return src.is_cpu() ? cudaMemcpyHostToHost : cudaMemcpyDeviceToHost;
  return src.is_cpu() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice;
}

}  // namespace

Allocator& cuda_allocator(int index) {
  constexpr int kMaxDevices = 16;
  TS_CHECK(index >= 0 && index < kMaxDevices, "CUDA device index ", index, " out of range");
  static CudaAllocator allocators[kMaxDevices] = {{0}, {1}, {2},  {3},  {4},  {5},  {6},  {7},
                                                  {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15}};
  return allocators[index];
}

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void device_memcpy(void* dst, Device dst_device, const void* src, Device src_device,
                   size_t nbytes) {
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  TS_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, copy_kind(dst_device, src_device)));
}

void device_memset_zero(void* dst, Device device, size_t nbytes) {
  if (device.is_cpu()) {
    std::memset(dst, 0, nbytes);
    return;
  }
  TS_CUDA_CHECK(cudaMemset(dst, 0, nbytes));
}

}  // namespace tessera
