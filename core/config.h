// Typed, validated reading of YAML job files. A ConfigNode is one mapping of the file plus its
// dotted key path; every key the program asks about is recorded (in a structure the root and all
// its children share), so that check_no_unknown_keys() can reject misspelled keys. Every error is
// a tessera::Error whose message starts with "file.yaml:LINE:" (1-based) where the YAML has a
// line, and names the key by its full dotted path.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace tessera {
namespace detail {

struct ConfigState;  // file name, keys read, overrides applied: shared by a root and its children

template <typename T>
inline constexpr bool kConfigValue =
    std::is_same_v<T, bool> || std::is_same_v<T, int> || std::is_same_v<T, int64_t> ||
    std::is_same_v<T, double> || std::is_same_v<T, float> || std::is_same_v<T, std::string> ||
    std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<std::string>>;

}  // namespace detail

class ConfigNode {
 public:
  // Parses a YAML file; throws Error for a missing/unreadable file ("config file 'x' not
  // found"), a syntax error ("x.yaml:LINE:COL: ..."), duplicate keys, or a top level that is not
  // a mapping (an empty file is an empty mapping).
  static ConfigNode load_file(const std::string& path);
  // Same as load_file for YAML text; `name` stands for the file name in messages.
  static ConfigNode parse(const std::string& text, const std::string& name);

  // Applies a command-line override "a.b.c=value" to this node's tree: the value is parsed as
  // YAML, missing mappings on the way are created. Call before reading. Throws Error for a
  // malformed assignment, unparsable value, or a path through a non-mapping.
  void apply_override(const std::string& assignment);

  // A required key (may be dotted: "train.lr"); throws Error when it is missing or holds a
  // value that is not a T. T: bool, int, int64_t, double, float, std::string,
  // std::vector<int64_t>, std::vector<std::string>.
  template <typename T>
  T get(const std::string& key) const {
    static_assert(detail::kConfigValue<T>, "ConfigNode::get: unsupported type");
    T out{};
    if (!read(key, out)) throw_missing(key);
    return out;
  }
  // An optional key: `fallback` when it is absent; throws Error when present but not a T.
  template <typename T>
  T get(const std::string& key, const T& fallback) const {
    static_assert(detail::kConfigValue<T>, "ConfigNode::get: unsupported type");
    T out{};
    return read(key, out) ? out : fallback;
  }

  // The mapping under `key`; an absent (or empty) key gives an empty node whose reads all fall
  // back to defaults. Throws Error with the line when the key holds something else.
  ConfigNode child(const std::string& key) const;
  // Whether `key` is present; counts as reading it.
  bool has(const std::string& key) const;
  // Throws Error "x.yaml:LINE: key 'a.b' = <value as written>: <what>" when !ok.
  void require(bool ok, const std::string& key, const std::string& what) const;
  // Throws Error naming the first key under this node (recursively) that no get/child/has/
  // require ever asked about, with the known keys at its level and the closest one.
  void check_no_unknown_keys() const;

  // The file name given to load_file/parse.
  const std::string& file() const;
  // Dotted path of this node ("" for the root).
  const std::string& path() const { return path_; }

  ConfigNode(const ConfigNode&) = default;
  // Rebinds to o's node (YAML::Node's own operator= would overwrite the referenced YAML value).
  ConfigNode& operator=(const ConfigNode& o);

 private:
  struct Entry;
  ConfigNode(std::shared_ptr<detail::ConfigState> state, YAML::Node node, std::string path);

  // Looks up a one-component key and marks it read; false when absent.
  bool find(const std::string& key, Entry& out) const;
  // Reads a present key into `out` (false when absent); throws Error on a wrong type.
  template <typename T>
  bool read(const std::string& key, T& out) const;
  [[noreturn]] void throw_missing(const std::string& key) const;

  std::shared_ptr<detail::ConfigState> state_;
  YAML::Node node_;  // a mapping, or null for an absent or empty section
  std::string path_;
};

}  // namespace tessera
