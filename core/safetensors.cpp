#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>
#include <vector>

namespace tessera {
namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr const char* kMetadataKey = "__metadata__";

// A file descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now; returns close()'s result, where a delayed write error can surface.
  int close() {
    const int r = ::close(fd_);
    fd_ = -1;
    return r;
  }

 private:
  int fd_;
};

// Writes all `n` bytes; false with errno set on failure.
bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly `n` bytes at `offset`; false on error (errno set) or end of file (errno 0).
bool read_all_at(int fd, void* data, size_t n, uint64_t offset) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

std::string read_failure(int err) {
  return err ? std::strerror(err) : "unexpected end of file (did it change while being read?)";
}

// The JSON header, padded with spaces so that the data buffer starts 8-byte aligned.
std::string make_header(const std::string& path, const std::map<std::string, Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = safetensors_dtype(t.dtype());
    e["shape"] = t.shape();
    e["data_offsets"] = nlohmann::ordered_json::array({offset, offset + t.nbytes()});
    offset += t.nbytes();
    h[name] = std::move(e);
  }
  std::string s;
  try {
    s = h.dump();
  } catch (const nlohmann::json::exception& e) {
    TS_THROW(path, ": tensor names and metadata must be valid UTF-8: ", e.what());
  }
  s.append((8 - s.size() % 8) % 8, ' ');
  return s;
}

void check_savable(const std::string& path, const std::map<std::string, Tensor>& tensors) {
  for (const auto& [name, t] : tensors) {
    TS_CHECK(name != kMetadataKey, path, ": '", kMetadataKey, "' is reserved, not a tensor name");
    TS_CHECK(t.defined(), path, ": tensor '", name, "' is undefined");
    TS_CHECK(t.is_cpu(), path, ": tensor '", name, "' is on ", t.device().str(),
             "; copy it to the CPU first (Tensor::to)");
  }
}

// Opens `path` for reading; throws Error for a missing or unreadable file or a folder.
int open_for_read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) TS_THROW(path, ": file not found");
  if (fd < 0) TS_THROW(path, ": cannot open: ", std::strerror(errno));
  return fd;
}

struct Header {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data buffer
};

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& v) {
  if (!v.is_object())
    TS_THROW(path, ": '", kMetadataKey, "' must be an object of strings, got ", v.type_name());
  std::map<std::string, std::string> out;
  for (const auto& [k, s] : v.items()) {
    if (!s.is_string())
      TS_THROW(path, ": '", kMetadataKey, "' entry '", k, "' must be a string, got ", s.type_name(),
               " ", s.dump());
    out[k] = s.get<std::string>();
  }
  return out;
}

// A JSON array of non-negative integers that fit int64_t, or nullopt.
std::optional<std::vector<uint64_t>> unsigned_array(const json& v) {
  if (!v.is_array()) return std::nullopt;
  std::vector<uint64_t> out;
  for (const json& x : v) {
    if (!x.is_number_unsigned()) return std::nullopt;
    const uint64_t u = x.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    out.push_back(u);
  }
  return out;
}

std::string offsets_str(const TensorInfo& t) {
  return "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
}

TensorInfo parse_entry(const std::string& where, const json& v, uint64_t buffer_bytes) {
  if (!v.is_object())
    TS_THROW(where, " must be an object with dtype, shape and data_offsets, got ", v.type_name());
  TensorInfo t;
  const auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) TS_THROW(where, " has no string 'dtype'");
  try {
    t.dtype = dtype_from_safetensors(dt->get<std::string>());
  } catch (const Error& e) {
    TS_THROW(where, ": ", e.message());
  }
  const auto sh = v.find("shape");
  const auto dims = sh == v.end() ? std::nullopt : unsigned_array(*sh);
  if (!dims) TS_THROW(where, " needs 'shape', a list of non-negative integers");
  const auto off = v.find("data_offsets");
  const auto offs = off == v.end() ? std::nullopt : unsigned_array(*off);
  if (!offs || offs->size() != 2 || (*offs)[0] > (*offs)[1])
    TS_THROW(where, " needs 'data_offsets', a list [begin, end] of integers with begin <= end");
  t.shape.assign(dims->begin(), dims->end());
  t.begin = (*offs)[0];
  t.end = (*offs)[1];
  uint64_t nbytes = dtype_size(t.dtype);
  bool overflow = false;
  for (uint64_t d : *dims) overflow |= __builtin_mul_overflow(nbytes, d, &nbytes);
  if (overflow || t.end - t.begin != nbytes)
    TS_THROW(where, " data_offsets ", offsets_str(t), " do not match shape ", shape_str(t.shape),
             " of ", safetensors_dtype(t.dtype), " (",
             overflow ? std::string("overflows 64 bits") : std::to_string(nbytes) + " bytes", ")");
  if (t.end > buffer_bytes)
    TS_THROW(where, " data_offsets ", offsets_str(t), " run past the end of the ", buffer_bytes,
             "-byte data buffer (truncated file?)");
  return t;
}

// The tensors must tile the buffer [0, buffer_bytes) exactly, as the format requires.
void check_coverage(const std::string& path, const std::map<std::string, TensorInfo>& tensors,
                    uint64_t buffer_bytes) {
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> spans;
  for (const auto& [name, t] : tensors) spans.emplace_back(t.begin, t.end, name);
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 0;
  std::string prev;
  for (const auto& [begin, end, name] : spans) {
    if (begin < pos)
      TS_THROW(path, ": tensor '", name, "' (bytes [", begin, ", ", end, "]) overlaps tensor '",
               prev, "' (which ends at ", pos, ")");
    if (begin > pos)
      TS_THROW(path, ": gap in the data buffer: bytes [", pos, ", ", begin,
               ") belong to no tensor (before tensor '", name, "')");
    pos = end;
    prev = name;
  }
  if (pos != buffer_bytes)
    TS_THROW(path, ": the tensors cover ", pos, " bytes but the data buffer holds ", buffer_bytes,
             " bytes: trailing bytes belong to no tensor");
}

Header read_header(const std::string& path, int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) TS_THROW(path, ": cannot stat: ", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) TS_THROW(path, ": is a folder, not a safetensors file");
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < 8)
    TS_THROW(path, ": file is ", file_bytes,
             " bytes, shorter than the 8-byte header length: not a safetensors file");
  unsigned char len[8];
  if (!read_all_at(fd, len, 8, 0)) TS_THROW(path, ": cannot read: ", read_failure(errno));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > kMaxHeaderBytes)
    TS_THROW(path, ": header length ", n, " exceeds the ", kMaxHeaderBytes,
             "-byte limit: not a safetensors file");
  if (n > file_bytes - 8)
    TS_THROW(path, ": header length ", n, " runs past the end of the ", file_bytes,
             "-byte file (truncated file?)");
  std::string text(n, '\0');
  if (!read_all_at(fd, text.data(), n, 8)) TS_THROW(path, ": cannot read: ", read_failure(errno));
  json h;
  try {
    h = json::parse(text);
  } catch (const json::exception& e) {
    TS_THROW(path, ": header is not valid JSON: ", e.what());
  }
  if (!h.is_object()) TS_THROW(path, ": header must be a JSON object, got ", h.type_name());
  Header out;
  out.data_start = 8 + n;
  const uint64_t buffer_bytes = file_bytes - out.data_start;
  for (const auto& [name, v] : h.items()) {
    if (name == kMetadataKey)
      out.metadata = parse_metadata(path, v);
    else
      out.tensors[name] = parse_entry(path + ": tensor '" + name + "'", v, buffer_bytes);
  }
  check_coverage(path, out.tensors, buffer_bytes);
  return out;
}

}  // namespace

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  check_savable(path, tensors);
  const std::string header = make_header(path, tensors, metadata);
  const std::string tmp = path + ".tmp";
  // Throws with errno's text after removing the tmp file.
  const auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    TS_THROW("cannot save '", path, "': ", what, ": ", reason);
  };
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) {
      const std::string reason = std::strerror(errno);
      TS_THROW("cannot save '", path, "': cannot create '", tmp, "': ", reason);
    }
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(header.size() >> (8 * i));
    if (!write_all(fd.get(), len, 8) || !write_all(fd.get(), header.data(), header.size()))
      fail("write");
    for (const auto& [name, t] : tensors)
      if (t.nbytes() > 0 && !write_all(fd.get(), t.raw(), t.nbytes())) fail("write");
    if (::fsync(fd.get()) != 0) fail("fsync");
    if (fd.close() != 0) fail("close");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0)
    TS_THROW("saved '", path, "' but could not fsync its folder '", dir,
             "': ", std::strerror(errno));
}

SafetensorsFile load_safetensors(const std::string& path) {
  Fd fd(open_for_read(path));
  Header h = read_header(path, fd.get());
  SafetensorsFile out;
  out.metadata = std::move(h.metadata);
  for (const auto& [name, info] : h.tensors) {
    Tensor t = Tensor::empty(info.shape, info.dtype);
    if (t.nbytes() > 0 && !read_all_at(fd.get(), t.raw(), t.nbytes(), h.data_start + info.begin))
      TS_THROW(path, ": cannot read tensor '", name, "': ", read_failure(errno));
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

Tensor load_safetensors_tensor(const std::string& path, const std::string& name) {
  Fd fd(open_for_read(path));
  const Header h = read_header(path, fd.get());
  auto it = h.tensors.find(name);
  TS_CHECK(it != h.tensors.end(), path, ": has no tensor '", name, "'");
  Tensor t = Tensor::empty(it->second.shape, it->second.dtype);
  if (t.nbytes() > 0 &&
      !read_all_at(fd.get(), t.raw(), t.nbytes(), h.data_start + it->second.begin))
    TS_THROW(path, ": cannot read tensor '", name, "': ", read_failure(errno));
  return t;
}

std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path) {
  Fd fd(open_for_read(path));
  return read_header(path, fd.get()).tensors;
}

}  // namespace tessera
