#include "core/config.h"

#include <gtest/gtest.h>

#include <functional>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "core/log.h"

namespace tessera {
namespace {

// The Error message thrown by f, or "" when it does not throw.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// True when `text` contains `part` (gtest prints both on failure through the << below).
bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

ConfigNode yaml(const std::string& text) {
  return ConfigNode::parse(text, "x.yaml");
}

TEST(Config, MissingFileIsOneClearError) {
  const std::string e = error_of([] { ConfigNode::load_file("does/not/exist.yaml"); });
  EXPECT_TRUE(has(e, "config file 'does/not/exist.yaml' not found")) << e;
}

TEST(Config, LoadsAFile) {
  const ConfigNode c =
      ConfigNode::load_file(std::string(TESSERA_SOURCE_DIR) + "/configs/tiny.yaml");
  EXPECT_EQ(c.get<std::string>("name"), "tiny");
  EXPECT_EQ(c.child("model").get<int64_t>("n_layer"), 4);
  EXPECT_EQ(c.get<std::string>("sample.prompt"), "The jury said");
}

TEST(Config, SyntaxErrorNamesLineAndColumn) {
  std::string e = error_of([] { yaml("a: 1\nb: [1, 2\n"); });
  EXPECT_TRUE(has(e, "x.yaml:3:1: ")) << e;
  e = error_of([] { yaml("a: 1\n  b: 2\n"); });
  EXPECT_TRUE(has(e, "x.yaml:2:")) << e;
}

TEST(Config, TopLevelMustBeAMapping) {
  const std::string e = error_of([] { yaml("- 1\n- 2\n"); });
  EXPECT_TRUE(has(e, "x.yaml:1: the top level must be a mapping")) << e;
  EXPECT_FALSE(yaml("").has("anything"));  // an empty file is an empty mapping
  EXPECT_FALSE(yaml("# only a comment\n").has("anything"));
}

TEST(Config, DuplicateKeysAreErrors) {
  const std::string e = error_of([] { yaml("train:\n  lr: 1\n  steps: 2\n  lr: 3\n"); });
  EXPECT_TRUE(has(e, "x.yaml:4: duplicate key 'train.lr' (first at line 2)")) << e;
}

TEST(Config, ReadsEveryType) {
  const ConfigNode c = yaml(
      "flag: true\noff: false\nn: -7\nbig: 9000000000\nplus: +5\nsci: 1e3\nx: 2.5\ny: -1e-3\n"
      "name: hello world\nquoted: '123'\nnum_as_str: 42\nempty: ''\n"
      "dims: [1, 2, 3]\nwords:\n  - a\n  - 'b c'\nnone: []\n");
  EXPECT_EQ(c.get<bool>("flag"), true);
  EXPECT_EQ(c.get<bool>("off"), false);
  EXPECT_EQ(c.get<int>("n"), -7);
  EXPECT_EQ(c.get<int64_t>("big"), 9000000000);
  EXPECT_EQ(c.get<int>("plus"), 5);
  EXPECT_EQ(c.get<int64_t>("sci"), 1000);  // a whole number written in float form
  EXPECT_DOUBLE_EQ(c.get<double>("x"), 2.5);
  EXPECT_FLOAT_EQ(c.get<float>("y"), -1e-3f);
  EXPECT_DOUBLE_EQ(c.get<double>("n"), -7.0);
  EXPECT_EQ(c.get<std::string>("name"), "hello world");
  EXPECT_EQ(c.get<std::string>("quoted"), "123");
  EXPECT_EQ(c.get<std::string>("num_as_str"), "42");
  EXPECT_EQ(c.get<std::string>("empty"), "");
  EXPECT_EQ(c.get<std::vector<int64_t>>("dims"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(c.get<std::vector<std::string>>("words"), (std::vector<std::string>{"a", "b c"}));
  EXPECT_TRUE(c.get<std::vector<int64_t>>("none").empty());
  EXPECT_NO_THROW(c.check_no_unknown_keys());
}

TEST(Config, DefaultsFillAbsentKeysAndSections) {
  const ConfigNode c = yaml("train:\n  lr: 0.5\nempty_section:\n");
  const ConfigNode train = c.child("train");
  EXPECT_DOUBLE_EQ(train.get<double>("lr", 1.0), 0.5);
  EXPECT_EQ(train.get<int64_t>("steps", 10), 10);
  EXPECT_EQ(train.path(), "train");
  const ConfigNode model = c.child("model");  // absent: every key falls back
  EXPECT_EQ(model.path(), "model");
  EXPECT_EQ(model.get<int>("n_layer", 4), 4);
  EXPECT_FALSE(model.has("n_layer"));
  EXPECT_EQ(c.child("empty_section").get<std::string>("x", "d"), "d");
  EXPECT_EQ(c.get<std::vector<std::string>>("list", {"a"}), std::vector<std::string>{"a"});
  EXPECT_TRUE(c.has("train"));
  EXPECT_TRUE(c.has("train.lr"));
  EXPECT_DOUBLE_EQ(c.get<double>("train.lr"), 0.5);  // dotted keys reach into sections
  EXPECT_NO_THROW(c.check_no_unknown_keys());
}

TEST(Config, MissingRequiredKey) {
  const ConfigNode c = yaml("train:\n  steps: 3\n");
  std::string e = error_of([&] { c.child("train").get<double>("lr"); });
  EXPECT_TRUE(has(e, "x.yaml: missing required key 'train.lr'")) << e;
  e = error_of([&] { c.get<int>("model.n_layer"); });
  EXPECT_TRUE(has(e, "x.yaml: missing required key 'model.n_layer'")) << e;
}

TEST(Config, WrongTypeNamesFileLineKeyAndValue) {
  const ConfigNode c = yaml(
      "train:\n  steps: 3\n  lr: abc\n  name: [1, 2]\n  dims: [1, x]\n  flag: 1\n  q: '5'\n"
      "  m:\n    a: 1\n");
  const ConfigNode t = c.child("train");
  std::string e = error_of([&] { t.get<double>("lr", 1.0); });
  EXPECT_TRUE(has(e, "x.yaml:3: key 'train.lr' must be a number, got 'abc'")) << e;
  e = error_of([&] { t.get<std::string>("name"); });
  EXPECT_TRUE(has(e, "x.yaml:4: key 'train.name' must be a string, got a list")) << e;
  e = error_of([&] { t.get<std::vector<int64_t>>("dims"); });
  EXPECT_TRUE(has(e, "x.yaml:5: key 'train.dims' item 1 must be an integer, got 'x'")) << e;
  e = error_of([&] { t.get<std::vector<int64_t>>("steps"); });
  EXPECT_TRUE(has(e, "x.yaml:2: key 'train.steps' must be a list")) << e;
  e = error_of([&] { t.get<bool>("flag"); });
  EXPECT_TRUE(has(e, "x.yaml:6: key 'train.flag' must be true or false, got '1'")) << e;
  e = error_of([&] { t.get<int>("q"); });  // quoted: a string, not a number
  EXPECT_TRUE(has(e, "x.yaml:7: key 'train.q' must be an integer, got '5'")) << e;
  e = error_of([&] { t.get<double>("m"); });
  EXPECT_TRUE(has(e, "x.yaml:8: key 'train.m' must be a number, got a mapping")) << e;
  e = error_of([&] { c.child("train.steps"); });
  EXPECT_TRUE(has(e, "x.yaml:2: key 'train.steps' must be a mapping of keys")) << e;
}

TEST(Config, IntegersMustBeWholeAndInRange) {
  const ConfigNode c = yaml(
      "half: 3.5\nhuge: 3000000000\nhuger: 99999999999999999999\nfloaty: 1e30\nword: ten\nf: "
      "1e39\n");
  std::string e = error_of([&] { c.get<int64_t>("half"); });
  EXPECT_TRUE(has(e, "x.yaml:1: key 'half' must be an integer, got '3.5'")) << e;
  e = error_of([&] { c.get<int>("huge"); });
  EXPECT_TRUE(has(e, "x.yaml:2: key 'huge' = 3000000000 is out of range for a 32-bit integer"))
      << e;
  EXPECT_EQ(c.get<int64_t>("huge"), 3000000000);
  e = error_of([&] { c.get<int64_t>("huger"); });
  EXPECT_TRUE(has(e, "x.yaml:3: key 'huger' = 99999999999999999999 is out of range")) << e;
  e = error_of([&] { c.get<int64_t>("floaty"); });
  EXPECT_TRUE(has(e, "x.yaml:4: key 'floaty' = 1e30 is out of range")) << e;
  e = error_of([&] { c.get<float>("f"); });
  EXPECT_TRUE(has(e, "x.yaml:6: key 'f' = 1e39 is out of range for a 32-bit float")) << e;
  EXPECT_FLOAT_EQ(c.get<float>("floaty"), 1e30f);
  e = error_of([&] { c.get<int>("word"); });
  EXPECT_TRUE(has(e, "x.yaml:5: key 'word' must be an integer, got 'ten'")) << e;
}

// Decision: YAML 1.1's yes/no/on/off are not booleans; only true and false are.
TEST(Config, BoolAcceptsOnlyTrueAndFalse) {
  const ConfigNode c = yaml("a: yes\nb: on\nc: True\nd: 'true'\n");
  for (const char* key : {"a", "b", "c", "d"}) {
    const std::string e = error_of([&] { c.get<bool>(key); });
    EXPECT_TRUE(has(e, "key '" + std::string(key) + "' must be true or false")) << e;
  }
}

TEST(Config, UnknownKeySuggestsTheClosestKnownKey) {
  const ConfigNode c = yaml("name: x\nmodel:\n  n_layer: 2\n  n_heads: 4\n  d_model: 8\n");
  c.get<std::string>("name");
  const ConfigNode m = c.child("model");
  m.get<int>("n_layer", 1);
  m.get<int>("n_head", 1);
  m.get<int>("d_model", 1);
  const std::string e = error_of([&] { c.check_no_unknown_keys(); });
  EXPECT_TRUE(has(e,
                  "x.yaml:4: unknown key 'model.n_heads': did you mean 'model.n_head'? "
                  "(known keys here: d_model, n_head, n_layer)"))
      << e;
  EXPECT_EQ(error_of([&] { m.check_no_unknown_keys(); }), e);  // a child checks its subtree
}

TEST(Config, UnknownTopLevelKeyWithoutSuggestion) {
  const ConfigNode c = yaml("name: x\nmodel:\n  a: 1\nzzz_unrelated: 3\n");
  c.get<std::string>("name");
  c.child("model").get<int>("a");
  const std::string e = error_of([&] { c.check_no_unknown_keys(); });
  EXPECT_TRUE(has(e, "x.yaml:4: unknown key 'zzz_unrelated' (known keys here: model, name)")) << e;
}

TEST(Config, UnreadSectionContentsAreUnknown) {
  const ConfigNode c = yaml("trian:\n  lr: 1\n");
  c.child("train").get<double>("lr", 0.1);
  std::string e = error_of([&] { c.check_no_unknown_keys(); });
  EXPECT_TRUE(has(e, "x.yaml:1: unknown key 'trian': did you mean 'train'?")) << e;
  const ConfigNode d = yaml("train:\n  lr: 1\n  lr_x: 2\n");
  d.child("train").get<double>("lr");
  e = error_of([&] { d.child("train").check_no_unknown_keys(); });
  EXPECT_TRUE(has(e, "x.yaml:3: unknown key 'train.lr_x'")) << e;
}

TEST(Config, RequireNamesFileLineKeyAndValue) {
  const ConfigNode c = yaml("model:\n  d_model: 256\n  n_head: 5\n  dims: [1, 2]\n");
  const ConfigNode m = c.child("model");
  const int64_t d = m.get<int64_t>("d_model");
  const int64_t h = m.get<int64_t>("n_head");
  EXPECT_NO_THROW(m.require(h > 0, "n_head", "must be positive"));
  std::string e = error_of([&] { m.require(d % h == 0, "n_head", "must divide model.d_model"); });
  EXPECT_TRUE(has(e, "x.yaml:3: key 'model.n_head' = 5: must divide model.d_model")) << e;
  e = error_of([&] { m.require(false, "dims", "must have 3 items"); });
  EXPECT_TRUE(has(e, "x.yaml:4: key 'model.dims' = [1, 2]: must have 3 items")) << e;
  e = error_of([&] { m.require(false, "n_layer", "must be positive"); });
  EXPECT_TRUE(has(e, "x.yaml: key 'model.n_layer' (default value): must be positive")) << e;
  e = error_of([&] { c.require(false, "model.n_head", "bad"); });
  EXPECT_TRUE(has(e, "x.yaml:3: key 'model.n_head' = 5: bad")) << e;
}

TEST(Config, OverridesReplaceAndCreateKeys) {
  ConfigNode c = yaml("train:\n  lr: 0.1\n  steps: 5\nname: x\n");
  c.apply_override("train.lr=1e-3");
  c.apply_override("model.n_layer=2");  // creates the section
  c.apply_override("a.b.c=[1, 2]");
  c.apply_override("name='quoted string'");
  c.apply_override("train.steps=7");
  c.apply_override(" train.steps = 8");  // the last one wins; spaces around the key are fine
  EXPECT_DOUBLE_EQ(c.child("train").get<double>("lr"), 1e-3);
  EXPECT_EQ(c.child("train").get<int>("steps"), 8);
  EXPECT_EQ(c.child("model").get<int>("n_layer"), 2);
  EXPECT_EQ(c.get<std::vector<int64_t>>("a.b.c"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c.get<std::string>("name"), "quoted string");
  EXPECT_NO_THROW(c.check_no_unknown_keys());
}

TEST(Config, OverrideErrorsNameTheOverride) {
  ConfigNode c = yaml("train:\n  lr: 0.1\n");
  c.apply_override("train.lr=fast");
  c.apply_override("train.lrr=1");
  std::string e = error_of([&] { c.child("train").get<double>("lr"); });
  EXPECT_TRUE(has(e, "x.yaml (override 'train.lr=fast'): key 'train.lr' must be a number")) << e;
  e = error_of([&] { c.check_no_unknown_keys(); });
  EXPECT_TRUE(has(e,
                  "x.yaml (override 'train.lrr=1'): unknown key 'train.lrr': did you mean "
                  "'train.lr'?"))
      << e;
  for (const char* bad : {"train.lr", "=3", "train..lr=1", "train.=1", ".lr=1",
                          "train.lr=", "train.lr=[1,", "train.lr.x=1"}) {
    e = error_of([&] { c.apply_override(bad); });
    EXPECT_TRUE(has(e, "x.yaml: override '" + std::string(bad) + "'")) << bad << ": " << e;
  }
}

TEST(Config, AssignmentRebindsWithoutTouchingTheTree) {
  const ConfigNode c = yaml("a:\n  x: 1\nb:\n  x: 2\n");
  ConfigNode n = c.child("a");
  n = c.child("b");
  EXPECT_EQ(n.get<int>("x"), 2);
  EXPECT_EQ(c.child("a").get<int>("x"), 1);
  EXPECT_EQ(n.path(), "b");
}

TEST(Log, PrefixesTimestampLevelAndRank) {
  std::ostringstream out;
  Logger single(0, LogLevel::info, &out);
  single.info("hello");
  single.debug("hidden");
  single.warn("two\nlines");
  const std::string t = R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z )";
  EXPECT_TRUE(std::regex_match(
      out.str(), std::regex(t + "INFO  hello\n" + t + "WARN  two\n" + t + "WARN  lines\n")))
      << out.str();
  std::ostringstream multi;
  Logger r3(3, LogLevel::debug, &multi, 8);
  r3.debug("d");
  r3.error("e");
  EXPECT_TRUE(std::regex_match(
      multi.str(), std::regex(t + "DEBUG \\[rank 3\\] d\n" + t + "ERROR \\[rank 3\\] e\n")))
      << multi.str();
}

TEST(Log, ParsesLevels) {
  EXPECT_EQ(parse_log_level("debug"), LogLevel::debug);
  EXPECT_EQ(parse_log_level("info"), LogLevel::info);
  EXPECT_EQ(parse_log_level("warning"), LogLevel::warn);
  EXPECT_EQ(parse_log_level("error"), LogLevel::error);
  const std::string e = error_of([] { parse_log_level("loud"); });
  EXPECT_TRUE(has(e, "unknown log level 'loud'")) << e;
}

}  // namespace
}  // namespace tessera
