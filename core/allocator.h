// One allocator interface per device (like c10::Allocator). Storage owns the bytes it gets from
// one.
#pragma once

#include <cstddef>

#include "core/device.h"

namespace tessera {

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns `nbytes` bytes on device() or throws Error; nbytes == 0 returns nullptr.
  virtual void* allocate(size_t nbytes) = 0;
  // Gives back a block from allocate() with the same size.
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual Device device() const = 0;
};

// The host allocator: 64-byte aligned blocks (cache lines, AVX-512 loads). Stateless and shared.
Allocator& cpu_allocator();

// The allocator for CUDA device `index`; throws Error in a build without CUDA.
Allocator& cuda_allocator(int index);

// Page-locked host memory (cudaMallocHost, cached like device memory), so that copies from a CUDA
// device run at full PCIe/NVLink speed: what Tensor::to(cpu) copies into from a CUDA tensor
// (checkpoints, losses). The plain host allocator in a build without CUDA.
Allocator& pinned_host_allocator();

// The allocator for `device`.
Allocator& allocator_for(Device device);

}  // namespace tessera
