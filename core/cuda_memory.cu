// CUDA side of core: device allocation and copies. Every CUDA call is checked (TS_CUDA_CHECK).
#include <cuda_runtime.h>

#include <cstring>
#include <memory>
#include <mutex>

#include "core/allocator.h"
#include "core/caching_allocator.h"
#include "core/cuda_check.h"
#include "core/tensor.h"

namespace tessera {
namespace {

// cudaMalloc/cudaFree on one device: the raw allocator under the caching one.
class CudaRawAllocator final : public Allocator {
 public:
  explicit CudaRawAllocator(int index) : index_(index) {}
  void* allocate(size_t nbytes) override {
    void* p = nullptr;
    TS_CUDA_CHECK(cudaSetDevice(index_));
    const cudaError_t e = cudaMalloc(&p, nbytes);  // 256-byte aligned at least
    // A failed cudaMalloc stays the runtime's "last error": clear it, or the next launch check
    // would report it after the caching allocator has recovered (released cache, retried).
    if (e != cudaSuccess) (void)cudaGetLastError();
    TS_CUDA_CHECK(e);
    return p;
  }
  void deallocate(void* ptr, size_t) override {
    if (ptr) cudaFree(ptr);  // no throw from a destructor path
  }
  Device device() const override { return Device::cuda(index_); }

 private:
  int index_;
};

// cudaMallocHost/cudaFreeHost: the raw allocator under the pinned host cache.
class PinnedRawAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMallocHost(&p, nbytes);
    if (e != cudaSuccess) (void)cudaGetLastError();  // as for cudaMalloc: no stale last error
    TS_CUDA_CHECK(e);
    return p;
  }
  void deallocate(void* ptr, size_t) override {
    if (ptr) cudaFreeHost(ptr);
  }
  Device device() const override { return Device::cpu(); }
};

cudaMemcpyKind copy_kind(Device dst, Device src) {
  if (dst.is_cpu()) return src.is_cpu() ? cudaMemcpyHostToHost : cudaMemcpyDeviceToHost;
  return src.is_cpu() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice;
}

}  // namespace

Allocator& cuda_allocator(int index) {
  constexpr int kMaxDevices = 16;
  TS_CHECK(index >= 0 && index < kMaxDevices, "CUDA device index ", index, " out of range");
  // One caching allocator per device for the process's lifetime, as PyTorch has (built on first
  // use: a CPU-only run of a CUDA build never touches the driver).
  static std::mutex mu;
  static std::unique_ptr<CachingAllocator> allocators[kMaxDevices];
  std::lock_guard<std::mutex> lock(mu);
  if (!allocators[index])
    allocators[index] =
        std::make_unique<CachingAllocator>(std::make_unique<CudaRawAllocator>(index));
  return *allocators[index];
}

Allocator& pinned_host_allocator() {
  static CachingAllocator pinned(std::make_unique<PinnedRawAllocator>());
  return pinned;
}

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void device_memcpy(void* dst, Device dst_device, const void* src, Device src_device,
                   size_t nbytes) {
  if (nbytes == 0) return;  // empty tensors have no storage pointer to copy
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  TS_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, copy_kind(dst_device, src_device)));
}

void device_synchronize(Device device) {
  if (device.is_cpu()) return;
  TS_CUDA_CHECK(cudaSetDevice(device.index));
  TS_CUDA_CHECK(cudaDeviceSynchronize());
}

void device_memset_zero(void* dst, Device device, size_t nbytes) {
  if (nbytes == 0) return;
  if (device.is_cpu()) {
    std::memset(dst, 0, nbytes);
    return;
  }
  TS_CUDA_CHECK(cudaMemset(dst, 0, nbytes));
}

}  // namespace tessera
