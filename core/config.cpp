#include "core/config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"

namespace tessera {
namespace detail {

struct ConfigState {
  std::string file;
  std::set<std::string> read;                    // dotted paths the program asked about
  std::map<std::string, std::string> overrides;  // dotted path -> the "a.b=value" that set it
};

}  // namespace detail

struct ConfigNode::Entry {
  YAML::Node key;
  YAML::Node value;
  std::string path;  // full dotted path
};

namespace {

using detail::ConfigState;

std::string join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string parent_of(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? "" : path.substr(0, dot);
}

// "x.yaml:12", "x.yaml (override 'a.b=1')" for values set by an override, or "x.yaml".
std::string location(const ConfigState& s, const std::string& path, const YAML::Mark& mark) {
  for (std::string p = path; !p.empty(); p = parent_of(p)) {
    const auto it = s.overrides.find(p);
    if (it != s.overrides.end()) return s.file + " (override '" + it->second + "')";
  }
  return mark.line >= 0 ? s.file + ":" + std::to_string(mark.line + 1) : s.file;
}

// How a value shows in a message.
std::string describe(const YAML::Node& v) {
  if (v.IsScalar()) return "'" + v.Scalar() + "'";
  if (v.IsSequence()) return "a list";
  if (v.IsMap()) return "a mapping";
  return "no value";
}

// The value as written, for require()'s message.
std::string as_written(const YAML::Node& v) {
  if (v.IsScalar()) return v.Scalar();
  if (v.IsNull()) return "null";
  YAML::Emitter em;
  em << YAML::Flow << v;
  return em.c_str();
}

// Unquoted scalars are the only ones that can be numbers or booleans.
bool plain_scalar(const YAML::Node& v) {
  return v.IsScalar() && v.Tag() != "!";
}

bool parse_double(std::string s, double& out) {
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  for (const char* inf : {".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF"})
    if (s == inf) {
      out = s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
      return true;
    }
  if (s == ".nan" || s == ".NaN" || s == ".NAN") {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

void convert(const std::string& at, const YAML::Node& v, bool& out) {
  if (plain_scalar(v) && (v.Scalar() == "true" || v.Scalar() == "false")) {
    out = v.Scalar() == "true";
    return;
  }
  TS_THROW(at, " must be true or false, got ", describe(v));
}

void convert(const std::string& at, const YAML::Node& v, int64_t& out) {
  if (!plain_scalar(v)) TS_THROW(at, " must be an integer, got ", describe(v));
  const std::string& s = v.Scalar();
  const char* b = s.data() + (s.size() > 1 && s[0] == '+' && s[1] != '-');
  const auto [p, ec] = std::from_chars(b, s.data() + s.size(), out);
  if (p == s.data() + s.size() && ec == std::errc()) return;
  if (p == s.data() + s.size() && ec == std::errc::result_out_of_range)
    TS_THROW(at, " = ", s, " is out of range for a 64-bit integer");
  double d;  // 1e6 or 2.0 is fine when it is a whole number
  if (!parse_double(s, d) || !std::isfinite(d) || d != std::floor(d))
    TS_THROW(at, " must be an integer, got '", s, "'");
  if (std::fabs(d) >= 0x1p63) TS_THROW(at, " = ", s, " is out of range for a 64-bit integer");
  out = static_cast<int64_t>(d);
}

void convert(const std::string& at, const YAML::Node& v, int& out) {
  int64_t x;
  convert(at, v, x);
  if (x < std::numeric_limits<int>::min() || x > std::numeric_limits<int>::max())
    TS_THROW(at, " = ", v.Scalar(), " is out of range for a 32-bit integer");
  out = static_cast<int>(x);
}

void convert(const std::string& at, const YAML::Node& v, double& out) {
  if (!plain_scalar(v) || !parse_double(v.Scalar(), out))
    TS_THROW(at, " must be a number, got ", describe(v));
}

void convert(const std::string& at, const YAML::Node& v, float& out) {
  double d;
  convert(at, v, d);
  if (std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max())
    TS_THROW(at, " = ", v.Scalar(), " is out of range for a 32-bit float");
  out = static_cast<float>(d);
}

void convert(const std::string& at, const YAML::Node& v, std::string& out) {
  if (!v.IsScalar()) TS_THROW(at, " must be a string, got ", describe(v));
  out = v.Scalar();
}

template <typename T>
void convert(const std::string& at, const YAML::Node& v, std::vector<T>& out) {
  if (!v.IsSequence()) TS_THROW(at, " must be a list (e.g. [a, b]), got ", describe(v));
  out.assign(v.size(), T{});
  for (size_t i = 0; i < v.size(); ++i) convert(at + " item " + std::to_string(i), v[i], out[i]);
}

// Rejects keys that are not scalars and duplicate keys anywhere under `node`.
void check_keys(const std::string& file, const YAML::Node& node, const std::string& path) {
  if (node.IsSequence())
    for (const YAML::Node& item : node) check_keys(file, item, path);
  if (!node.IsMap()) return;
  std::map<std::string, int> seen;  // key -> 0-based line
  for (const auto& kv : node) {
    const int line = kv.first.Mark().line;
    const std::string at = line >= 0 ? file + ":" + std::to_string(line + 1) : file;
    if (!kv.first.IsScalar())
      TS_THROW(at, ": keys must be names, got ", describe(kv.first), " under '", path, "'");
    const std::string full = join(path, kv.first.Scalar());
    const auto [it, fresh] = seen.emplace(kv.first.Scalar(), line);
    if (!fresh) TS_THROW(at, ": duplicate key '", full, "' (first at line ", it->second + 1, ")");
    check_keys(file, kv.second, full);
  }
}

// Optimal-string-alignment distance (edits, with adjacent swaps counting as one).
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min(
          {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

[[noreturn]] void throw_unknown(const ConfigState& s, const std::string& path,
                                const YAML::Node& key) {
  const std::string name = key.Scalar();
  const std::string prefix = path.empty() ? "" : path + ".";
  std::vector<std::string> known;
  for (auto it = s.read.lower_bound(prefix); it != s.read.end() && it->starts_with(prefix); ++it)
    if (it->find('.', prefix.size()) == std::string::npos)
      known.push_back(it->substr(prefix.size()));
  std::string closest;
  size_t best = std::max<size_t>(1, name.size() / 3) + 1;
  for (const std::string& k : known) {
    const size_t d = edit_distance(name, k);
    if (d < best && d < k.size()) best = d, closest = k;
  }
  std::string list;
  for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
  TS_THROW(location(s, join(path, name), key.Mark()), ": unknown key '", join(path, name), "'",
           closest.empty() ? "" : ": did you mean '" + join(path, closest) + "'?",
           known.empty() ? " (no keys are read here)" : " (known keys here: " + list + ")");
}

void check_unknown(const ConfigState& s, const YAML::Node& node, const std::string& path) {
  if (!node.IsMap()) return;
  for (const auto& kv : node) {
    const std::string full = join(path, kv.first.Scalar());
    if (!s.read.count(full)) throw_unknown(s, path, kv.first);
    check_unknown(s, kv.second, full);
  }
}

// Splits "a.b.c" into its components; throws Error on an empty component.
std::vector<std::string> split_key(const std::string& key, const std::string& context) {
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  if (key.empty() || key.back() == '.' ||
      std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); }))
    TS_THROW(context, ": key '", key, "' is malformed (expected names joined by dots: train.lr)");
  return parts;
}

}  // namespace

ConfigNode::ConfigNode(std::shared_ptr<detail::ConfigState> state, YAML::Node node,
                       std::string path)
    : state_(std::move(state)), node_(node), path_(std::move(path)) {}

ConfigNode& ConfigNode::operator=(const ConfigNode& o) {
  state_ = o.state_;
  node_.reset(o.node_);
  path_ = o.path_;
  return *this;
}

ConfigNode ConfigNode::load_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) TS_THROW("config file '", path, "' not found");
  if (std::filesystem::is_directory(path, ec))
    TS_THROW("config file '", path, "' is a folder, not a YAML file");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) TS_THROW("cannot read config file '", path, "': ", std::strerror(errno));
  return parse(text.str(), path);
}

ConfigNode ConfigNode::parse(const std::string& text, const std::string& name) {
  YAML::Node root;
  try {
    root.reset(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    if (e.mark.line < 0) TS_THROW(name, ": ", e.msg);
    TS_THROW(name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg);
  }
  if (root.IsNull()) root.reset(YAML::Node(YAML::NodeType::Map));
  if (!root.IsMap())
    TS_THROW(name, ":", root.Mark().line + 1,
             ": the top level must be a mapping of keys (key: value), got ", describe(root));
  check_keys(name, root, "");
  auto state = std::make_shared<detail::ConfigState>();
  state->file = name;
  return ConfigNode(std::move(state), root, "");
}

void ConfigNode::apply_override(const std::string& assignment) {
  const std::string context = state_->file + ": override '" + assignment + "'";
  const auto eq = assignment.find('=');
  if (eq == std::string::npos) TS_THROW(context, " must look like key=value (e.g. train.lr=1e-3)");
  std::string key = assignment.substr(0, eq);
  key.erase(0, key.find_first_not_of(" \t"));
  key.erase(key.find_last_not_of(" \t") + 1);
  const std::string text = assignment.substr(eq + 1);
  const std::vector<std::string> parts = split_key(key, context);
  if (text.find_first_not_of(" \t") == std::string::npos)
    TS_THROW(context, " has no value (write ", key, "='' for an empty string)");
  YAML::Node value;
  try {
    value.reset(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    TS_THROW(context, ": the value is not valid YAML: ", e.msg);
  }
  check_keys(context, value, join(path_, key));
  TS_CHECK(node_.IsMap(), context, ": overrides apply to a mapping present in the file");
  YAML::Node cur;
  cur.reset(node_);
  std::string path = path_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    path = join(path, parts[i]);
    YAML::Node next = cur[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next.reset(cur[parts[i]]);
    }
    if (!next.IsMap())
      TS_THROW(context, ": '", path, "' holds ", describe(next), ", not a mapping of keys");
    cur.reset(next);
  }
  cur[parts.back()] = value;
  state_->overrides[join(path_, key)] = assignment;
}

bool ConfigNode::find(const std::string& key, Entry& out) const {
  TS_CHECK(!key.empty(), state_->file, ": empty key under '", path_, "'");
  out.path = join(path_, key);
  state_->read.insert(out.path);
  if (!node_.IsMap()) return false;
  for (const auto& kv : node_) {
    if (kv.first.Scalar() != key) continue;
    out.key.reset(kv.first);
    out.value.reset(kv.second);
    return true;
  }
  return false;
}

template <typename T>
bool ConfigNode::read(const std::string& key, T& out) const {
  const auto dot = key.rfind('.');
  if (dot != std::string::npos) return child(key.substr(0, dot)).read(key.substr(dot + 1), out);
  Entry e;
  if (!find(key, e)) return false;
  convert(location(*state_, e.path, e.key.Mark()) + ": key '" + e.path + "'", e.value, out);
  return true;
}

template bool ConfigNode::read(const std::string&, bool&) const;
template bool ConfigNode::read(const std::string&, int&) const;
template bool ConfigNode::read(const std::string&, int64_t&) const;
template bool ConfigNode::read(const std::string&, double&) const;
template bool ConfigNode::read(const std::string&, float&) const;
template bool ConfigNode::read(const std::string&, std::string&) const;
template bool ConfigNode::read(const std::string&, std::vector<int64_t>&) const;
template bool ConfigNode::read(const std::string&, std::vector<std::string>&) const;

void ConfigNode::throw_missing(const std::string& key) const {
  TS_THROW(state_->file, ": missing required key '", join(path_, key), "'");
}

ConfigNode ConfigNode::child(const std::string& key) const {
  const auto dot = key.find('.');
  if (dot != std::string::npos) return child(key.substr(0, dot)).child(key.substr(dot + 1));
  Entry e;
  if (!find(key, e) || e.value.IsNull()) return ConfigNode(state_, YAML::Node(), e.path);
  if (!e.value.IsMap())
    TS_THROW(location(*state_, e.path, e.key.Mark()), ": key '", e.path,
             "' must be a mapping of keys (a section), got ", describe(e.value));
  return ConfigNode(state_, e.value, e.path);
}

bool ConfigNode::has(const std::string& key) const {
  const auto dot = key.rfind('.');
  if (dot != std::string::npos) return child(key.substr(0, dot)).has(key.substr(dot + 1));
  Entry e;
  return find(key, e);
}

void ConfigNode::require(bool ok, const std::string& key, const std::string& what) const {
  const auto dot = key.rfind('.');
  if (dot != std::string::npos)
    return child(key.substr(0, dot)).require(ok, key.substr(dot + 1), what);
  Entry e;
  const bool present = find(key, e);
  if (ok) return;
  if (!present) TS_THROW(state_->file, ": key '", e.path, "' (default value): ", what);
  TS_THROW(location(*state_, e.path, e.key.Mark()), ": key '", e.path, "' = ", as_written(e.value),
           ": ", what);
}

void ConfigNode::check_no_unknown_keys() const {
  check_unknown(*state_, node_, path_);
}

const std::string& ConfigNode::file() const {
  return state_->file;
}

}  // namespace tessera
