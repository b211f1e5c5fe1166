// Byte-level BPE: GPT-2 pre-token splits worked out by the regex's rules, merges against a hand
// computation and a naive trainer that recounts every pair per merge, byte-exact round trips on
// random UTF-8 and raw bytes, the tokenizer.json layout, save -> load, and load errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/error.h"
#include "tests/support/numeric.h"
#include "trainer/tokenizer.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using Pieces = std::vector<std::string>;

Pieces split(std::string_view text) {
  Pieces out;
  for (std::string_view p : pretokenize(text)) out.emplace_back(p);
  return out;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Random valid UTF-8: ASCII, whitespace, Latin-1, Greek, Cyrillic, CJK, Hangul, emoji, ...
std::string random_utf8(std::mt19937_64& rng, size_t codepoints) {
  static constexpr std::pair<uint32_t, uint32_t> kPools[] = {
      {0x20, 0x7E},     {0x61, 0x7A},     {0x09, 0x0D},     {0x20, 0x20},     {0xA0, 0xFF},
      {0x391, 0x3C9},   {0x410, 0x44F},   {0x4E00, 0x4E40}, {0xAC00, 0xAC30}, {0x1F600, 0x1F64F},
      {0x2000, 0x200A}, {0x3000, 0x3000}, {0xFF10, 0xFF19}, {0x0660, 0x0669}, {0x10FFF0, 0x10FFFF}};
  std::string s;
  for (size_t i = 0; i < codepoints; ++i) {
    const auto& [lo, hi] = kPools[rng() % std::size(kPools)];
    append_utf8(lo + static_cast<uint32_t>(rng() % (hi - lo + 1)), s);
  }
  return s;
}

std::string random_bytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

constexpr const char* kEnglish =
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
    "election produced \"no evidence\" that any irregularities took place. The jury further "
    "said in term-end presentments that the City Executive Committee, which had over-all charge "
    "of the election, \"deserves the praise and thanks of the City of Atlanta\" for the manner "
    "in which the election was conducted. It's 1961; they'll say we've done 42 things.\n";

// A tokenizer trained on English plus random multilingual text, so merges span multi-byte
// characters too.
Tokenizer mixed_tokenizer(int vocab_size) {
  std::mt19937_64 rng(7);
  std::vector<std::string> docs = {kEnglish, kEnglish};
  for (int i = 0; i < 4; ++i) docs.push_back(random_utf8(rng, 300));
  return Tokenizer::train(docs, vocab_size);
}

// Naive reference trainer: recounts every pair over all pre-tokens before each merge.
std::vector<Tokenizer::Merge> naive_train(const std::vector<std::string>& documents,
                                          int vocab_size) {
  std::map<std::string, int64_t> counts;
  for (const std::string& d : documents) {
    for (std::string_view p : pretokenize(d)) ++counts[std::string(p)];
  }
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [piece, count] : counts) {
    std::vector<int32_t> ids;
    for (char c : piece) ids.push_back(static_cast<uint8_t>(c));
    words.emplace_back(ids, count);
  }
  std::vector<std::string> tokens;
  std::map<std::string, int32_t> ids_of;
  for (int b = 0; b < 256; ++b) {
    tokens.emplace_back(1, static_cast<char>(b));
    ids_of[tokens.back()] = b;
  }
  std::vector<Tokenizer::Merge> merges;
  while (static_cast<int>(tokens.size()) < vocab_size - 1) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pairs;
    for (const auto& [ids, count] : words) {
      for (size_t i = 0; i + 1 < ids.size(); ++i) pairs[{ids[i], ids[i + 1]}] += count;
    }
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (it->second > best->second) best = it;  // ascending order keeps the smallest on ties
    }
    const auto [left, right] = best->first;
    const std::string bytes = tokens[left] + tokens[right];
    if (!ids_of.count(bytes)) {
      ids_of[bytes] = static_cast<int32_t>(tokens.size());
      tokens.push_back(bytes);
    }
    const int32_t result = ids_of[bytes];
    merges.push_back({left, right, result});
    for (auto& [ids, count] : words) {
      std::vector<int32_t> merged;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i + 1 < ids.size() && ids[i] == left && ids[i + 1] == right) {
          merged.push_back(result);
          ++i;
        } else {
          merged.push_back(ids[i]);
        }
      }
      ids = merged;
    }
  }
  return merges;
}

bool same_merges(const std::vector<Tokenizer::Merge>& a, const std::vector<Tokenizer::Merge>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].left != b[i].left || a[i].right != b[i].right || a[i].result != b[i].result) {
      return false;
    }
  }
  return true;
}

// A fresh, empty folder for one test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path(::testing::TempDir()) /
            (std::string("tessera_tok_") + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Runs Tokenizer::load on `path` and returns the Error's message ("" when nothing was thrown).
std::string load_error(const std::string& path) {
  try {
    Tokenizer::load(path);
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

// ---- Pre-tokenization ----------------------------------------------------------------------

TEST(Pretokenize, SplitsLikeGpt2Regex) {
  // "  end": \s+(?!\S) takes the first space and leaves the second to " ?\p{L}+".
  EXPECT_EQ(split("Hello world's  end\n"), (Pieces{"Hello", " world", "'s", " ", " end", "\n"}));
  EXPECT_EQ(
      split("I'll don't they're we've I'm he'd"),
      (Pieces{"I", "'ll", " don", "'t", " they", "'re", " we", "'ve", " I", "'m", " he", "'d"}));
  // Contractions are case-sensitive: 'S is punctuation followed by a letter.
  EXPECT_EQ(split("IT'S"), (Pieces{"IT", "'", "S"}));
  EXPECT_EQ(split("abc123 45!!? 'quote'"),
            (Pieces{"abc", "123", " 45", "!!?", " '", "quote", "'"}));
  // A run of whitespace before a word: all but the last; a lone newline stands alone.
  EXPECT_EQ(split("x  \n\ny"), (Pieces{"x", "  \n", "\n", "y"}));
  EXPECT_EQ(split("\t\tx"), (Pieces{"\t", "\t", "x"}));
  EXPECT_EQ(split("  x"), (Pieces{" ", " x"}));
  // Trailing whitespace is one piece.
  EXPECT_EQ(split("a   "), (Pieces{"a", "   "}));
  EXPECT_EQ(split(" "), (Pieces{" "}));
  EXPECT_EQ(split(""), (Pieces{}));
  // A space joins the following punctuation run, not a following newline.
  EXPECT_EQ(split("a ,b \nc"), (Pieces{"a", " ,", "b", " ", "\n", "c"}));
}

TEST(Pretokenize, ClassifiesNonAsciiAndInvalidBytes) {
  EXPECT_EQ(split("café über naïve"), (Pieces{"café", " über", " naïve"}));
  EXPECT_EQ(split("2×3÷4"), (Pieces{"2", "×", "3", "÷", "4"}));
  EXPECT_EQ(split("日本語 text"), (Pieces{"日本語", " text"}));
  EXPECT_EQ(split("Ελλάδα и Россия"), (Pieces{"Ελλάδα", " и", " Россия"}));
  EXPECT_EQ(split("2024年"), (Pieces{"2024", "年"}));
  EXPECT_EQ(split("ℂ〇ℂ"), (Pieces{"ℂ", "〇", "ℂ"}));  // letterlike letter, CJK number
  EXPECT_EQ(split("😀😀 ok!"), (Pieces{"😀😀", " ok", "!"}));
  // U+00A0 and U+3000 are whitespace, but only U+0020 attaches to the next piece.
  EXPECT_EQ(split("a\u00A0b"), (Pieces{"a", "\u00A0", "b"}));
  EXPECT_EQ(split("a\u3000\u3000b"), (Pieces{"a", "\u3000", "\u3000", "b"}));
  // Invalid UTF-8: each bad byte is an "other" code point of its own.
  EXPECT_EQ(split("a\xff\xfe b"), (Pieces{"a", "\xff\xfe", " b"}));
  EXPECT_EQ(split("\xe6\x97 x"), (Pieces{"\xe6\x97", " x"}));  // truncated sequence
  EXPECT_EQ(split("\xc0\xaf"
                  "a"),
            (Pieces{"\xc0\xaf", "a"}));  // overlong '/'
  EXPECT_EQ(split("\xed\xa0\x80"
                  "b"),
            (Pieces{"\xed\xa0\x80", "b"}));  // surrogate
}

TEST(Pretokenize, MatchesPythonRegexModule) {
  // GPT-2's own pattern, run by the `regex` module of whichever python3 is on PATH.
  if (std::system("python3 -c 'import regex' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 with the 'regex' module is not on PATH; install it (pip install "
                    "regex) to compare pre-tokenization with GPT-2's regex";
  }
  TempDir dir;
  std::mt19937_64 rng(testing::test_seed());
  std::vector<std::string> texts = {"Hello world's  end\n", "x  \n\ny", "IT'S 'quote' ok!!"};
  for (int i = 0; i < 2000; ++i) texts.push_back(random_utf8(rng, rng() % 16));
  nlohmann::json expected = nlohmann::json::array();
  for (const std::string& t : texts) expected.push_back(split(t));
  write_text(dir.file("cases.json"), nlohmann::json{{"texts", texts}, {"pieces", expected}}.dump());
  write_text(dir.file("check.py"),
             "import json, sys, regex\n"
             "pat = regex.compile(r\"\"\"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+|"
             " ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+\"\"\")\n"
             "c = json.load(open(sys.argv[1]))\n"
             "bad = [(t, pat.findall(t), p) for t, p in zip(c['texts'], c['pieces'])"
             " if pat.findall(t) != p]\n"
             "if bad:\n"
             "    sys.exit(f'{len(bad)} differ, e.g. (text, regex, ours): {bad[:3]}')\n");
  const std::string cmd = "python3 " + dir.file("check.py") + " " + dir.file("cases.json");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "pre-token splits differ from the regex (see above)";
}

TEST(Pretokenize, PiecesConcatenateToTheText) {
  std::mt19937_64 rng(testing::test_seed());
  for (int trial = 0; trial < 200; ++trial) {
    const std::string text =
        trial % 2 ? random_utf8(rng, rng() % 80) : random_bytes(rng, rng() % 80);
    std::string joined;
    for (std::string_view p : pretokenize(text)) {
      ASSERT_FALSE(p.empty());
      joined += p;
    }
    ASSERT_EQ(joined, text);
  }
}

// ---- Training ------------------------------------------------------------------------------

TEST(TokenizerTrain, MergesMatchHandComputation) {
  // Pre-tokens "aaab", " aaab", " ab". Pair counts: (a,a)=4, (a,b)=3, (' ',a)=2 -> "aa".
  // Then (a,b)=3 -> "ab"; ("aa","ab")=2 -> "aaab"; (' ',"ab")=1 and (' ',"aaab")=1 tie, and the
  // smaller pair (32, 257) goes first -> " ab"; then " aaab".
  const Tokenizer tok = Tokenizer::train({"aaab aaab ab"}, 262);
  const std::vector<Tokenizer::Merge> expected = {
      {'a', 'a', 256}, {'a', 'b', 257}, {256, 257, 258}, {' ', 257, 259}, {' ', 258, 260}};
  EXPECT_TRUE(same_merges(tok.merges(), expected));
  EXPECT_EQ(tok.vocab_size(), 262);
  EXPECT_EQ(tok.eot_id(), 261);
  EXPECT_EQ(tok.token_bytes(258), "aaab");
  EXPECT_EQ(tok.token_bytes(260), " aaab");
  EXPECT_EQ(tok.token_bytes(261), "<|endoftext|>");
  EXPECT_EQ(tok.encode("aaab aaab ab"), (std::vector<int32_t>{258, 260, 259}));
  EXPECT_EQ(tok.encode("aaaa"), (std::vector<int32_t>{256, 256}));
  EXPECT_EQ(tok.encode("baaab"), (std::vector<int32_t>{'b', 258}));

  // Every pre-token is one token now: no pair is left for a sixth merge.
  try {
    Tokenizer::train({"aaab aaab ab"}, 263);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("lower vocab_size"), std::string::npos) << e.message();
  }
  EXPECT_THROW(Tokenizer::train({"abc"}, 256), Error);
}

TEST(TokenizerTrain, MatchesNaiveReferenceTrainer) {
  const uint64_t seed = testing::test_seed();
  std::mt19937_64 rng(seed);
  const std::string alphabet[] = {"a", "b", "c", "d", "é", "1", "2", "'s", ",", "!"};
  std::vector<std::string> docs(12);
  for (std::string& d : docs) {
    const int words = 20 + static_cast<int>(rng() % 40);
    for (int w = 0; w < words; ++w) {
      d += rng() % 5 ? " " : (rng() % 2 ? "\n" : "  ");
      const int len = 1 + static_cast<int>(rng() % 6);
      for (int i = 0; i < len; ++i) d += alphabet[rng() % std::size(alphabet)];
    }
  }
  const int vocab = 257 + 80;
  const std::vector<Tokenizer::Merge> reference = naive_train(docs, vocab);
  ASSERT_EQ(static_cast<int>(reference.size()), vocab - 257) << "corpus too small, seed " << seed;
  const Tokenizer tok = Tokenizer::train(docs, vocab);
  EXPECT_TRUE(same_merges(tok.merges(), reference)) << "seed " << seed;
  // Deterministic: the same input gives the same merges.
  EXPECT_TRUE(same_merges(Tokenizer::train(docs, vocab).merges(), tok.merges()));
}

// ---- Encode / decode -----------------------------------------------------------------------

TEST(TokenizerCodec, RoundTripsTextAndRawBytes) {
  const Tokenizer tok = mixed_tokenizer(600);
  std::mt19937_64 rng(testing::test_seed());
  std::vector<std::string> texts = {"",
                                    " ",
                                    "\n\n\n",
                                    "  \t \n  x  ",
                                    "   ",
                                    kEnglish,
                                    "<|endoftext|>",
                                    std::string(1000, ' '),
                                    std::string(3, '\0')};
  for (int i = 0; i < 100; ++i) texts.push_back(random_utf8(rng, rng() % 200));
  for (int i = 0; i < 100; ++i) texts.push_back(random_bytes(rng, rng() % 200));
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = tok.encode(text);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.eot_id());
    ASSERT_EQ(tok.decode(ids), text);
  }
  EXPECT_TRUE(tok.encode("").empty());
  // Merges make English shorter than its bytes.
  EXPECT_LT(tok.encode(kEnglish).size() * 2, std::string(kEnglish).size());
}

TEST(TokenizerCodec, EndOfTextAndOutOfRangeIds) {
  const Tokenizer tok = mixed_tokenizer(300);
  EXPECT_EQ(tok.eot_id(), 299);
  EXPECT_EQ(tok.decode({tok.eot_id(), 'h', 'i', tok.eot_id()}), "<|endoftext|>hi<|endoftext|>");
  EXPECT_THROW(tok.decode({300}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
  EXPECT_THROW(tok.token_bytes(300), Error);
  EXPECT_EQ(tok.token_bytes(' '), " ");
}

TEST(TokenizerCodec, EncodesConcurrently) {
  const Tokenizer tok = mixed_tokenizer(500);
  std::mt19937_64 rng(testing::test_seed());
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back(random_utf8(rng, 300));
  std::vector<std::vector<int32_t>> serial;
  for (const std::string& t : texts) serial.push_back(tok.encode(t));
  std::vector<std::vector<int32_t>> parallel(texts.size());
  std::vector<std::thread> threads;
  for (size_t w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (size_t i = w; i < texts.size(); i += 4) parallel[i] = tok.encode(texts[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(parallel, serial);
}

// ---- tokenizer.json ------------------------------------------------------------------------

TEST(TokenizerFile, WritesHuggingFaceLayout) {
  TempDir dir;
  const Tokenizer tok = Tokenizer::train({"aaab aaab ab"}, 262);
  tok.save(dir.file("tokenizer.json"));
  EXPECT_FALSE(fs::exists(dir.file("tokenizer.json.tmp")));
  const auto j = nlohmann::ordered_json::parse(read_text(dir.file("tokenizer.json")));

  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"version", "truncation", "padding", "added_tokens",
                                            "normalizer", "pre_tokenizer", "post_processor",
                                            "decoder", "model"}));
  EXPECT_EQ(j["version"], "1.0");
  EXPECT_TRUE(j["truncation"].is_null());
  EXPECT_EQ(j["added_tokens"].dump(),
            R"([{"id":261,"content":"<|endoftext|>","single_word":false,"lstrip":false,)"
            R"("rstrip":false,"normalized":true,"special":true}])");
  EXPECT_EQ(j["pre_tokenizer"].dump(),
            R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,)"
            R"("use_regex":true})");
  EXPECT_EQ(j["post_processor"].dump(),
            R"({"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,)"
            R"("use_regex":true})");
  EXPECT_EQ(j["decoder"].dump(),
            R"({"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,)"
            R"("use_regex":true})");
  const auto& model = j["model"];
  EXPECT_EQ(model["type"], "BPE");
  EXPECT_TRUE(model["dropout"].is_null());
  EXPECT_EQ(model["continuing_subword_prefix"], "");
  EXPECT_EQ(model["byte_fallback"], false);
  // GPT-2's bytes_to_unicode: printable bytes stand for themselves, byte 0 is U+0100 'Ā',
  // space (the 33rd unprintable byte) is U+0120 'Ġ', 0xAD is U+0143 'Ń'.
  const auto& vocab = model["vocab"];
  EXPECT_EQ(vocab.size(), 262u);
  EXPECT_EQ(vocab["!"], 33);
  EXPECT_EQ(vocab["Ā"], 0);
  EXPECT_EQ(vocab["Ġ"], 32);
  EXPECT_EQ(vocab["Ń"], 0xAD);
  EXPECT_EQ(vocab["ÿ"], 0xFF);
  EXPECT_EQ(vocab["Ġaaab"], 260);
  EXPECT_EQ(vocab["<|endoftext|>"], 261);
  EXPECT_EQ(model["merges"], (nlohmann::ordered_json{"a a", "a b", "aa ab", "Ġ ab", "Ġ aaab"}));
}

TEST(TokenizerFile, SaveLoadGivesIdenticalEncodings) {
  TempDir dir;
  const Tokenizer tok = mixed_tokenizer(700);
  tok.save(dir.file("tokenizer.json"));
  const Tokenizer loaded = Tokenizer::load(dir.file("tokenizer.json"));
  ASSERT_EQ(loaded.vocab_size(), tok.vocab_size());
  EXPECT_EQ(loaded.eot_id(), tok.eot_id());
  EXPECT_TRUE(same_merges(loaded.merges(), tok.merges()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    ASSERT_EQ(loaded.token_bytes(id), tok.token_bytes(id)) << id;
  }
  std::mt19937_64 rng(testing::test_seed());
  for (int i = 0; i < 50; ++i) {
    const std::string text = i % 2 ? random_utf8(rng, 150) : random_bytes(rng, 150);
    ASSERT_EQ(loaded.encode(text), tok.encode(text));
  }
  EXPECT_EQ(loaded.encode(kEnglish), tok.encode(kEnglish));
  // Saving the loaded tokenizer reproduces the file byte for byte.
  loaded.save(dir.file("again.json"));
  EXPECT_EQ(read_text(dir.file("again.json")), read_text(dir.file("tokenizer.json")));
}

TEST(TokenizerFile, LoadErrorsNameTheFileAndTheProblem) {
  TempDir dir;
  const std::string good = dir.file("tokenizer.json");
  Tokenizer::train({"aaab aaab ab"}, 262).save(good);
  const nlohmann::ordered_json base = nlohmann::ordered_json::parse(read_text(good));
  const auto variant = [&](const std::string& name, const auto& edit) {
    nlohmann::ordered_json j = base;
    edit(j);
    write_text(dir.file(name), j.dump());
    return load_error(dir.file(name));
  };
  const auto expect_error = [](const std::string& message, const std::string& path,
                               const std::string& what) {
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(what), std::string::npos) << message;
  };

  EXPECT_EQ(load_error(good), "");
  expect_error(load_error(dir.file("missing.json")), dir.file("missing.json"), "cannot open");
  write_text(dir.file("bad.json"), "{\"model\": ");
  expect_error(load_error(dir.file("bad.json")), dir.file("bad.json"), "not valid JSON");
  expect_error(variant("nomodel.json", [](auto& j) { j.erase("model"); }), dir.file("nomodel.json"),
               "layout");
  expect_error(variant("wordpiece.json", [](auto& j) { j["model"]["type"] = "WordPiece"; }),
               dir.file("wordpiece.json"), "BPE");
  expect_error(variant("merge.json", [](auto& j) { j["model"]["merges"][1] = "a zz"; }),
               dir.file("merge.json"), "needs token 'zz'");
  expect_error(variant("merge3.json", [](auto& j) { j["model"]["merges"][1] = "a b c"; }),
               dir.file("merge3.json"), "two tokens");
  // A repeated merge is harmless (the first rank applies): the file loads.
  EXPECT_EQ(variant("repeat.json", [](auto& j) { j["model"]["merges"][2] = "a a"; }), "");
  expect_error(variant("gap.json", [](auto& j) { j["model"]["vocab"].erase("Ā"); }),
               dir.file("gap.json"), "no token with id 0");
  expect_error(variant("alphabet.json", [](auto& j) { j["model"]["vocab"]["€"] = 262; }),
               dir.file("alphabet.json"), "byte-level alphabet");
  expect_error(variant("eot.json",
                       [](auto& j) {
                         j["model"]["vocab"]["<|endoftext|>"] = 0;
                         j["model"]["vocab"]["Ā"] = 261;
                         j["added_tokens"][0]["id"] = 0;
                       }),
               dir.file("eot.json"), "must be the last id");
  expect_error(variant("noeot.json",
                       [](auto& j) {
                         j["model"]["vocab"].erase("<|endoftext|>");
                         j["added_tokens"] = nlohmann::ordered_json::array();
                       }),
               dir.file("noeot.json"), "no <|endoftext|>");
  expect_error(variant("dup.json", [](auto& j) { j["model"]["vocab"]["aaab"] = 257; }),
               dir.file("dup.json"), "used by two tokens");
}

TEST(TokenizerFile, HuggingFaceTokenizersAgree) {
  if (std::system("/usr/bin/python3 -c 'import tokenizers' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "the Python 'tokenizers' module is not installed for /usr/bin/python3; "
                    "install it to compare encodings with Hugging Face";
  }
  TempDir dir;
  const Tokenizer tok = mixed_tokenizer(600);
  tok.save(dir.file("tokenizer.json"));
  std::mt19937_64 rng(testing::test_seed());
  std::vector<std::string> texts = {kEnglish, "Hello world's  end\n", "  x \n\n y  "};
  for (int i = 0; i < 20; ++i) texts.push_back(random_utf8(rng, 100));
  write_text(dir.file("texts.json"), nlohmann::json(texts).dump());
  write_text(dir.file("encode.py"),
             "import json, sys\n"
             "from tokenizers import Tokenizer\n"
             "t = Tokenizer.from_file(sys.argv[1])\n"
             "texts = json.load(open(sys.argv[2]))\n"
             "json.dump([t.encode(s).ids for s in texts], open(sys.argv[3], 'w'))\n");
  const std::string cmd = "/usr/bin/python3 " + dir.file("encode.py") + " " +
                          dir.file("tokenizer.json") + " " + dir.file("texts.json") + " " +
                          dir.file("ids.json");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto hf = nlohmann::json::parse(read_text(dir.file("ids.json")));
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(hf[i].get<std::vector<int32_t>>(), tok.encode(texts[i])) << "text " << i;
  }
}

}  // namespace
}  // namespace tessera
