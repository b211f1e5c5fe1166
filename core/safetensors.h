// safetensors I/O (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON header {"name": {"dtype", "shape", "data_offsets"}, "__metadata__"},
// then the data buffer. Offsets are relative to the buffer, which the tensors cover exactly.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/tensor.h"

namespace tessera {

// One tensor's header entry: bytes [begin, end) of the data buffer hold it.
struct TensorInfo {
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;  // CPU tensors, each owning its own storage
  std::map<std::string, std::string> metadata;
};

// Writes `tensors` (CPU, in name order, no gaps) and `metadata` to `path` atomically: a
// `path + ".tmp"` file is written and fsync'd, renamed over `path`, then the folder is fsync'd.
// Throws Error naming the path (and errno text) on a non-CPU or undefined tensor, the reserved
// name "__metadata__", or any I/O failure; on failure neither `path` nor the tmp file is touched
// or left behind (an existing `path` keeps its old contents).
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates a whole file into new CPU tensors (memory ~1x the file). Throws one Error
// naming the file and the problem: missing/unreadable file, bad header length, invalid JSON,
// malformed entry, unsupported dtype, offsets that disagree with the shape, fall outside the
// buffer, overlap or leave gaps, a buffer longer than its tensors, or non-string metadata.
SafetensorsFile load_safetensors(const std::string& path);

// Reads one tensor (the header is validated as by load_safetensors; only that tensor's bytes are
// read). Throws Error naming the path when the tensor is missing or unreadable.
Tensor load_safetensors_tensor(const std::string& path, const std::string& name);

// Reads and validates only the header (same checks as load_safetensors, data is not read).
std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path);

}  // namespace tessera
