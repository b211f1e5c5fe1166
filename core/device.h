// Where a tensor's bytes live.
#pragma once

#include <string>

struct CUstream_st;

namespace tessera {

// A CUDA stream handle (the same type as cudaStream_t), declared without the CUDA headers so that
// kernel headers can name it in every build. nullptr is the default stream.
using CudaStream = CUstream_st*;

enum class DeviceType { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;  // CUDA ordinal; 0 for the CPU

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const {
    return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
  }
};

// Parses "cpu", "cuda" or "cuda:N"; throws Error naming the accepted forms.
Device parse_device(const std::string& name);

// True when this build has the CUDA backend and a CUDA device is visible.
bool cuda_available();

}  // namespace tessera
