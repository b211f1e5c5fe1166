#include "core/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>

#include "tests/support/numeric.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// A fresh folder under the system temp dir, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera_safetensors_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// Writes a file by hand: 8-byte length (`n`, or the header's size), header, data.
void write_raw(const fs::path& p, const std::string& header, const std::string& data,
               std::optional<uint64_t> n = std::nullopt) {
  std::ofstream(p, std::ios::binary) << le64(n.value_or(header.size())) << header << data;
}

// The Error message of load_safetensors(p), or "" when it loads.
std::string load_error(const fs::path& p) {
  try {
    load_safetensors(p.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

Tensor random_tensor(const Shape& shape, DType dtype, std::mt19937_64& rng) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<unsigned char*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(rng());
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || !std::memcmp(a.raw(), b.raw(), a.nbytes()));
}

TEST(Safetensors, RoundTripsEveryDtypeWithMetadata) {
  const uint64_t seed = testing::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::map<std::string, Tensor> tensors = {
      {"h.0.attn.c_attn.weight", random_tensor({3, 5}, DType::f32, rng)},
      {"b16", random_tensor({7}, DType::bf16, rng)},
      {"half", random_tensor({2, 3, 1}, DType::f16, rng)},
      {"ids", random_tensor({9}, DType::i32, rng)},
      {"q8", random_tensor({3}, DType::i8, rng)},  // odd size: later offsets are unaligned
      {"bytes", random_tensor({5, 1}, DType::u8, rng)},
      {"tokens", random_tensor({11}, DType::u16, rng)},
      {"scalar", random_tensor({}, DType::f32, rng)},
      {"empty", random_tensor({0, 4}, DType::f32, rng)},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "42"}};
  TempDir tmp;
  const std::string path = (tmp.path / "all.safetensors").string();
  save_safetensors(path, tensors, metadata);
  const SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.metadata, metadata);
  ASSERT_EQ(f.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    const Tensor& u = f.tensors.at(name);
    EXPECT_EQ(u.shape(), t.shape());
    EXPECT_EQ(u.dtype(), t.dtype());
    EXPECT_TRUE(u.is_cpu());
    EXPECT_TRUE(same_bytes(u, t));
  }
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Safetensors, HeaderIsAlignedSortedAndContiguous) {
  std::mt19937_64 rng(testing::test_seed());
  const std::map<std::string, Tensor> tensors = {{"b", random_tensor({3}, DType::i8, rng)},
                                                 {"a", random_tensor({2, 2}, DType::f32, rng)},
                                                 {"c", random_tensor({5}, DType::bf16, rng)}};
  TempDir tmp;
  const fs::path path = tmp.path / "x.safetensors";
  save_safetensors(path.string(), tensors, {{"k", "v"}});
  const std::string raw = file_bytes(path);
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header = raw.substr(8, n);
  const size_t end = header.find_last_not_of(' ');
  EXPECT_EQ(header[end], '}');
  EXPECT_LT(header.size() - end - 1, 8u) << "padding is at most 7 spaces";
  const auto h = nlohmann::json::parse(header);
  EXPECT_EQ(h.at("__metadata__"), nlohmann::json({{"k", "v"}}));
  EXPECT_EQ(h.size(), 4u);
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {  // name order, no gaps
    const auto& e = h.at(name);
    EXPECT_EQ(e.at("dtype"), safetensors_dtype(t.dtype()));
    EXPECT_EQ(e.at("shape").get<Shape>(), t.shape());
    EXPECT_EQ(e.at("data_offsets"), nlohmann::json({offset, offset + t.nbytes()}));
    EXPECT_EQ(0, std::memcmp(raw.data() + 8 + n + offset, t.raw(), t.nbytes())) << name;
    offset += t.nbytes();
  }
  EXPECT_EQ(raw.size(), 8 + n + offset);
}

// One F32 tensor [1.0, -2.5] and {"format": "pt"}, as the reference writer lays it out.
std::string golden_file() {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"
      "   ";  // 85 bytes of JSON + 3 spaces: the data starts at 8 + 88
  return std::string("\x58\0\0\0\0\0\0\0", 8) + header +
         std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8);
}

TEST(Safetensors, LoadsHandBuiltGoldenFile) {
  TempDir tmp;
  const fs::path path = tmp.path / "golden.safetensors";
  std::ofstream(path, std::ios::binary) << golden_file();
  const SafetensorsFile f = load_safetensors(path.string());
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(f.tensors.count("x"), 1u);
  const Tensor& x = f.tensors.at("x");
  EXPECT_EQ(x.shape(), Shape{2});
  ASSERT_EQ(x.dtype(), DType::f32);
  EXPECT_EQ(x.data<float>()[0], 1.0f);
  EXPECT_EQ(x.data<float>()[1], -2.5f);

  const auto info = read_safetensors_header(path.string());
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info.at("x").dtype, DType::f32);
  EXPECT_EQ(info.at("x").shape, Shape{2});
  EXPECT_EQ(info.at("x").begin, 0u);
  EXPECT_EQ(info.at("x").end, 8u);
}

TEST(Safetensors, SaveWritesTheGoldenBytes) {
  Tensor x = Tensor::empty({2}, DType::f32);
  x.data<float>()[0] = 1.0f;
  x.data<float>()[1] = -2.5f;
  TempDir tmp;
  const fs::path path = tmp.path / "x.safetensors";
  save_safetensors(path.string(), {{"x", x}}, {{"format", "pt"}});
  EXPECT_EQ(file_bytes(path), golden_file());
}

TEST(Safetensors, CorruptFilesGiveOneClearError) {
  struct Case {
    const char* what;
    std::string header;
    std::string data;
    std::optional<uint64_t> n;
    const char* expected;
  };
  const std::string f32x2 = R"("dtype":"F32","shape":[2])";
  const std::vector<Case> cases = {
      {"header length past the file", "{}", "", 1000, "header length 1000 runs past the end"},
      {"absurd header length", "{}", "", 100'000'001, "exceeds the 100000000-byte limit"},
      {"invalid JSON", "{not json", "", {}, "header is not valid JSON"},
      {"header not an object", "[1, 2]", "", {}, "header must be a JSON object"},
      {"entry not an object", R"({"x": 5})", "", {}, "tensor 'x' must be an object"},
      {"no dtype",
       R"({"x":{"shape":[2],"data_offsets":[0,8]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x' has no string 'dtype'"},
      {"dtype not a string",
       R"({"x":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x' has no string 'dtype'"},
      {"unknown dtype",
       R"({"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x': safetensors dtype 'F64' is not supported"},
      {"no shape",
       R"({"x":{"dtype":"F32","data_offsets":[0,8]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x' needs 'shape'"},
      {"negative extent",
       R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x' needs 'shape'"},
      {"fractional extent",
       R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x' needs 'shape'"},
      {"no offsets",
       "{\"x\":{" + f32x2 + "}}",
       std::string(8, 'a'),
       {},
       "tensor 'x' needs 'data_offsets'"},
      {"one offset",
       "{\"x\":{" + f32x2 + R"(,"data_offsets":[0]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x' needs 'data_offsets'"},
      {"reversed offsets",
       "{\"x\":{" + f32x2 + R"(,"data_offsets":[8,0]}})",
       std::string(8, 'a'),
       {},
       "tensor 'x' needs 'data_offsets'"},
      {"offsets disagree with shape",
       R"({"h.0.attn.c_attn.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,100]}})",
       std::string(100, 'a'),
       {},
       "tensor 'h.0.attn.c_attn.weight' data_offsets [0, 100] do not match shape (3, 4) of F32 "
       "(48 bytes)"},
      {"shape overflows",
       R"({"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
       std::string(8, 'a'),
       {},
       "overflows 64 bits"},
      {"truncated data",
       "{\"x\":{" + f32x2 + R"(,"data_offsets":[0,8]}})",
       std::string(4, 'a'),
       {},
       "data_offsets [0, 8] run past the end of the 4-byte data buffer"},
      {"overlap",
       "{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 +
           R"(,"data_offsets":[4,12]}})",
       std::string(12, 'a'),
       {},
       "tensor 'b' (bytes [4, 12]) overlaps tensor 'a'"},
      {"gap",
       "{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]},"b":{)" + f32x2 +
           R"(,"data_offsets":[12,20]}})",
       std::string(20, 'a'),
       {},
       "gap in the data buffer: bytes [8, 12)"},
      {"buffer not starting at 0",
       "{\"b\":{" + f32x2 + R"(,"data_offsets":[4,12]}})",
       std::string(12, 'a'),
       {},
       "gap in the data buffer: bytes [0, 4)"},
      {"trailing bytes",
       "{\"a\":{" + f32x2 + R"(,"data_offsets":[0,8]}})",
       std::string(9, 'a'),
       {},
       "the tensors cover 8 bytes but the data buffer holds 9 bytes"},
      {"metadata value not a string",
       R"({"__metadata__":{"step":3}})",
       "",
       {},
       "'__metadata__' entry 'step' must be a string"},
      {"metadata not an object",
       R"({"__metadata__":[1]})",
       "",
       {},
       "'__metadata__' must be an object of strings"},
  };
  TempDir tmp;
  for (const Case& c : cases) {
    const fs::path path = tmp.path / "bad.safetensors";
    write_raw(path, c.header, c.data, c.n);
    const std::string e = load_error(path);
    EXPECT_NE(e.find(path.string() + ": "), std::string::npos) << c.what << ": " << e;
    EXPECT_NE(e.find(c.expected), std::string::npos) << c.what << ": " << e;
    // The header-only reader applies the same checks.
    EXPECT_THROW(read_safetensors_header(path.string()), Error) << c.what;
  }
  const fs::path short_file = tmp.path / "short.safetensors";
  std::ofstream(short_file, std::ios::binary) << "abcde";
  EXPECT_NE(load_error(short_file).find("file is 5 bytes, shorter than the 8-byte header length"),
            std::string::npos)
      << load_error(short_file);
  const std::string missing = load_error(tmp.path / "missing.safetensors");
  EXPECT_NE(missing.find("missing.safetensors: file not found"), std::string::npos) << missing;
  EXPECT_NE(load_error(tmp.path).find("is a folder"), std::string::npos) << load_error(tmp.path);
}

TEST(Safetensors, FailedSaveLeavesNoFile) {
  TempDir tmp;
  const fs::path path = tmp.path / "no_such_dir" / "x.safetensors";
  try {
    save_safetensors(path.string(), {{"x", Tensor::zeros({4}, DType::f32)}});
    FAIL() << "saved into a missing folder";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));

  // rename() fails when the target is a folder: the tmp file is removed, the folder is untouched.
  const fs::path dir_target = tmp.path / "taken";
  fs::create_directory(dir_target);
  EXPECT_THROW(save_safetensors(dir_target.string(), {{"x", Tensor::zeros({4}, DType::f32)}}),
               Error);
  EXPECT_TRUE(fs::is_directory(dir_target));
  EXPECT_FALSE(fs::exists(dir_target.string() + ".tmp"));
}

TEST(Safetensors, SaveReplacesAnExistingFile) {
  TempDir tmp;
  const std::string path = (tmp.path / "x.safetensors").string();
  save_safetensors(path, {{"old", Tensor::zeros({100}, DType::f32)}});
  Tensor t = Tensor::zeros({2}, DType::i32);
  t.data<int32_t>()[1] = 7;
  save_safetensors(path, {{"new", t}});
  const SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors.at("new").data<int32_t>()[1], 7);
  EXPECT_TRUE(f.metadata.empty());
}

TEST(Safetensors, SaveRejectsUndefinedTensorsAndTheReservedName) {
  TempDir tmp;
  const std::string path = (tmp.path / "x.safetensors").string();
  EXPECT_THROW(save_safetensors(path, {{"x", Tensor()}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"__metadata__", Tensor::zeros({1}, DType::u8)}}), Error);
  EXPECT_FALSE(fs::exists(path));
}

}  // namespace
}  // namespace tessera
