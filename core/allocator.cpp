#include "core/allocator.h"

#include <cstdlib>
#include <new>

#include "core/error.h"

namespace tessera {
namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    TS_CHECK(p != nullptr, "out of host memory allocating ", nbytes, " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
  Device device() const override { return Device::cpu(); }
};

}  // namespace

Allocator& cpu_allocator() {
  static CpuAllocator alloc;  // stateless: sharing it is not shared mutable state
  return alloc;
}

Allocator& allocator_for(Device device) {
  return device.is_cpu() ? cpu_allocator() : cuda_allocator(device.index);
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") return Device::cuda(0);
  if (name.rfind("cuda:", 0) == 0) {
    const std::string idx = name.substr(5);
    TS_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos,
             "bad device '", name, "': use cpu, cuda or cuda:N");
    return Device::cuda(std::stoi(idx));
  }
  TS_THROW("bad device '", name, "': use cpu, cuda or cuda:N");
}

#ifndef TESSERA_WITH_CUDA
Allocator& cuda_allocator(int) {
  TS_THROW("this Tessera was built without CUDA: rebuild with nvcc on PATH and -DTESSERA_CUDA=ON");
}
Allocator& pinned_host_allocator() {
  return cpu_allocator();
}
bool cuda_available() {
  return false;
}
#endif

}  // namespace tessera
