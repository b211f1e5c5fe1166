#include "trainer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "core/error.h"

namespace tessera {
namespace {

// ---- Pre-tokenization ----------------------------------------------------------------------

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

struct CodePoint {
  uint32_t offset;  // first byte in the text
  uint32_t cp;      // the code point; an invalid byte stands for itself with class kOther
  CharClass cls;
};

struct Range {
  uint32_t lo, hi;  // inclusive
};

constexpr Range kSpaceRanges[] = {
    {0x09, 0x0D},     {0x20, 0x20},     {0x85, 0x85},     {0xA0, 0xA0},     {0x1680, 0x1680},
    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}};

// \p{N} and \p{L} in the blocks named in tokenizer.h, exact there (taken from Python's `regex`
// module); code points of other blocks are in neither table.
constexpr Range kNumberRanges[] = {
    {0xB2, 0xB3},     {0xB9, 0xB9},     {0xBC, 0xBE},     {0x660, 0x669},   {0x6F0, 0x6F9},
    {0x966, 0x96F},   {0xE50, 0xE59},   {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089},
    {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x3007, 0x3007},
    {0x3021, 0x3029}, {0x3038, 0x303A}, {0xFF10, 0xFF19}};

constexpr Range kLetterRanges[] = {
    {0xAA, 0xAA},       {0xB5, 0xB5},       {0xBA, 0xBA},       {0xC0, 0xD6},
    {0xD8, 0xF6},       {0xF8, 0x2C1},      {0x2C6, 0x2D1},     {0x2E0, 0x2E4},
    {0x2EC, 0x2EC},     {0x2EE, 0x2EE},     {0x370, 0x374},     {0x376, 0x377},
    {0x37A, 0x37D},     {0x37F, 0x37F},     {0x386, 0x386},     {0x388, 0x38A},
    {0x38C, 0x38C},     {0x38E, 0x3A1},     {0x3A3, 0x3F5},     {0x3F7, 0x481},
    {0x48A, 0x52F},     {0x531, 0x556},     {0x559, 0x559},     {0x560, 0x588},
    {0x5D0, 0x5EA},     {0x5EF, 0x5F2},     {0x620, 0x64A},     {0x66E, 0x66F},
    {0x671, 0x6D3},     {0x6D5, 0x6D5},     {0x6E5, 0x6E6},     {0x6EE, 0x6EF},
    {0x6FA, 0x6FC},     {0x6FF, 0x6FF},     {0x904, 0x939},     {0x93D, 0x93D},
    {0x950, 0x950},     {0x958, 0x961},     {0x971, 0x97F},     {0xE01, 0xE30},
    {0xE32, 0xE33},     {0xE40, 0xE46},     {0x1100, 0x11FF},   {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},   {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},
    {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},   {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},
    {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},   {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},   {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},   {0x2071, 0x2071},   {0x207F, 0x207F},
    {0x2090, 0x209C},   {0x2102, 0x2102},   {0x2107, 0x2107},   {0x210A, 0x2113},
    {0x2115, 0x2115},   {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},
    {0x2128, 0x2128},   {0x212A, 0x212D},   {0x212F, 0x2139},   {0x213C, 0x213F},
    {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x3005, 0x3006},
    {0x3031, 0x3035},   {0x303B, 0x303C},   {0x3041, 0x3096},   {0x309D, 0x309F},
    {0x30A1, 0x30FA},   {0x30FC, 0x30FF},   {0x3400, 0x4DBF},   {0x4E00, 0x9FFF},
    {0xAC00, 0xD7A3},   {0xF900, 0xFA6D},   {0xFA70, 0xFAD9},   {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A},   {0xFF66, 0xFFBE},   {0xFFC2, 0xFFC7},   {0xFFCA, 0xFFCF},
    {0xFFD2, 0xFFD7},   {0xFFDA, 0xFFDC},   {0x20000, 0x2A6DF}, {0x2A700, 0x2B81D},
    {0x2B820, 0x2CEAD}, {0x2CEB0, 0x2EBE0}, {0x2EBF0, 0x2EE5D}, {0x2F800, 0x2FA1D}};

// Binary search in sorted, disjoint ranges.
template <size_t N>
bool in_ranges(uint32_t cp, const Range (&ranges)[N]) {
  const Range* it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                                     [](uint32_t c, const Range& r) { return c < r.lo; });
  return it != std::begin(ranges) && cp <= (it - 1)->hi;
}

CharClass classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CharClass::kLetter;
    if (cp >= '0' && cp <= '9') return CharClass::kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (in_ranges(cp, kSpaceRanges)) return CharClass::kSpace;
  if (in_ranges(cp, kLetterRanges)) return CharClass::kLetter;
  if (in_ranges(cp, kNumberRanges)) return CharClass::kNumber;
  return CharClass::kOther;
}

// Decodes the code point at text[i]; returns its length in bytes (1 for an invalid byte).
uint32_t decode_utf8(std::string_view text, size_t i, uint32_t& cp) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t b0 = byte(i);
  cp = b0;
  if (b0 < 0x80) return 1;
  uint32_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return 1;
  }
  if (i + len > text.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 1;
  uint32_t value = b0 & (0xFF >> (len + 1));
  for (uint32_t k = 1; k < len; ++k) {
    const uint8_t b = byte(i + k);
    if ((b & 0xC0) != 0x80) return 1;
    value = (value << 6) | (b & 0x3F);
  }
  cp = value;
  return len;
}

std::vector<CodePoint> decode_all(std::string_view text) {
  std::vector<CodePoint> cps;
  cps.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = 0;
    const uint32_t len = decode_utf8(text, i, cp);
    const CharClass cls = len == 1 && cp >= 0x80 ? CharClass::kOther : classify(cp);
    cps.push_back({static_cast<uint32_t>(i), cp, cls});
    i += len;
  }
  cps.push_back({static_cast<uint32_t>(text.size()), 0, CharClass::kOther});  // end sentinel
  return cps;
}

// Length in code points of a contraction ('s 't 're 've 'm 'll 'd) starting at k, or 0.
size_t contraction_at(const std::vector<CodePoint>& cps, size_t k, size_t m) {
  if (cps[k].cp != '\'' || k + 1 >= m) return 0;
  const uint32_t c1 = cps[k + 1].cp;
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (k + 2 >= m) return 0;
  const uint32_t c2 = cps[k + 2].cp;
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// ---- Byte <-> printable character mapping of GPT-2 (bytes_to_unicode) ---------------------

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other 68 bytes for
// U+0100 + n in byte order, so every token is a printable string in tokenizer.json.
constexpr std::array<uint32_t, 256> kByteToCodePoint = [] {
  std::array<uint32_t, 256> table{};
  uint32_t n = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[b] = printable ? b : 0x100 + n++;
  }
  return table;
}();

// The inverse: code point -> byte, -1 for code points outside the mapping.
constexpr std::array<int16_t, 0x200> kCodePointToByte = [] {
  std::array<int16_t, 0x200> table{};
  table.fill(-1);
  for (int16_t b = 0; b < 256; ++b) table[kByteToCodePoint[b]] = b;
  return table;
}();

// Token bytes as a tokenizer.json vocabulary string (" the" -> "Ġthe").
std::string bytes_to_vocab_string(std::string_view bytes) {
  std::string out;
  for (char c : bytes) {
    const uint32_t cp = kByteToCodePoint[static_cast<uint8_t>(c)];
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else {  // all code points of the mapping are below U+0800: two bytes
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

// The inverse of bytes_to_vocab_string; false when `s` holds a character outside the mapping.
bool vocab_string_to_bytes(std::string_view s, std::string& bytes) {
  bytes.clear();
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    const uint32_t len = decode_utf8(s, i, cp);
    if ((len == 1 && cp >= 0x80) || cp >= kCodePointToByte.size() || kCodePointToByte[cp] < 0) {
      return false;
    }
    bytes += static_cast<char>(kCodePointToByte[cp]);
    i += len;
  }
  return true;
}

// ---- Training ------------------------------------------------------------------------------

using PairKey = uint64_t;

PairKey pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t pair_left(PairKey k) {
  return static_cast<int32_t>(k >> 32);
}
int32_t pair_right(PairKey k) {
  return static_cast<int32_t>(k & 0xFFFFFFFFu);
}

// Replaces every non-overlapping occurrence of (left, right), scanning left to right.
void merge_in_place(std::vector<int32_t>& ids, int32_t left, int32_t right, int32_t result) {
  size_t out = 0;
  for (size_t i = 0; i < ids.size(); ++out) {
    if (i + 1 < ids.size() && ids[i] == left && ids[i + 1] == right) {
      ids[out] = result;
      i += 2;
    } else {
      ids[out] = ids[i++];
    }
  }
  ids.resize(out);
}

bool holds_pair(const std::vector<int32_t>& ids, int32_t left, int32_t right) {
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    if (ids[i] == left && ids[i + 1] == right) return true;
  }
  return false;
}

struct Word {
  std::vector<int32_t> ids;
  int64_t count;
};

// A candidate merge in the queue; stale when `count` no longer matches the pair's count.
struct Candidate {
  int64_t count;
  PairKey pair;
  // Orders the max-heap: highest count first, then smallest (left, right).
  bool operator<(const Candidate& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

// Counts of adjacent pairs over the words, kept current as merges are applied. `where` lists
// every word that has held a pair (a superset: stale entries are skipped when visited).
class PairCounts {
 public:
  explicit PairCounts(std::vector<Word>& words) : words_(words) {
    std::vector<std::pair<PairKey, int64_t>> deltas;
    for (size_t w = 0; w < words_.size(); ++w) {
      const std::vector<int32_t>& ids = words_[w].ids;
      for (size_t i = 0; i + 1 < ids.size(); ++i) {
        const PairKey p = pair_key(ids[i], ids[i + 1]);
        deltas.emplace_back(p, words_[w].count);
        std::vector<int32_t>& list = where_[p];
        if (list.empty() || list.back() != static_cast<int32_t>(w)) {
          list.push_back(static_cast<int32_t>(w));
        }
      }
    }
    apply(deltas);
  }

  // The most frequent pair (ties: smallest pair), or false when no pair is left.
  bool best(PairKey& pair) {
    while (!queue_.empty()) {
      const Candidate c = queue_.top();
      const auto it = count_.find(c.pair);
      if (it != count_.end() && it->second == c.count) {
        pair = c.pair;
        return true;
      }
      queue_.pop();
    }
    return false;
  }

  // Merges `pair` into `result` in every word that holds it and updates the counts.
  void merge(PairKey pair, int32_t result) {
    std::vector<int32_t> touched = std::move(where_[pair]);
    where_.erase(pair);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    const int32_t left = pair_left(pair), right = pair_right(pair);
    std::vector<std::pair<PairKey, int64_t>> deltas;
    for (int32_t w : touched) {
      Word& word = words_[w];
      if (!holds_pair(word.ids, left, right)) continue;  // a stale entry
      add_pairs(word, -word.count, deltas);
      merge_in_place(word.ids, left, right, result);
      add_pairs(word, word.count, deltas);
      for (size_t i = 0; i + 1 < word.ids.size(); ++i) {
        if (word.ids[i] == result || word.ids[i + 1] == result) {
          where_[pair_key(word.ids[i], word.ids[i + 1])].push_back(w);
        }
      }
    }
    apply(deltas);
  }

 private:
  static void add_pairs(const Word& word, int64_t sign_count,
                        std::vector<std::pair<PairKey, int64_t>>& deltas) {
    for (size_t i = 0; i + 1 < word.ids.size(); ++i) {
      deltas.emplace_back(pair_key(word.ids[i], word.ids[i + 1]), sign_count);
    }
  }

  // Adds the summed deltas to the counts and queues every pair whose count changed.
  void apply(std::vector<std::pair<PairKey, int64_t>>& deltas) {
    std::sort(deltas.begin(), deltas.end());
    for (size_t i = 0; i < deltas.size();) {
      const PairKey p = deltas[i].first;
      int64_t d = 0;
      for (; i < deltas.size() && deltas[i].first == p; ++i) d += deltas[i].second;
      if (d == 0) continue;
      const int64_t c = (count_[p] += d);
      if (c > 0) {
        queue_.push({c, p});
      } else {
        count_.erase(p);
      }
    }
  }

  std::vector<Word>& words_;
  std::unordered_map<PairKey, int64_t> count_;
  std::unordered_map<PairKey, std::vector<int32_t>> where_;
  std::priority_queue<Candidate> queue_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TS_CHECK(in, "cannot open tokenizer file '", path, "': check the path (a tokenizer.json ",
           "written by Tokenizer::save)");
  std::ostringstream buf;
  buf << in.rdbuf();
  TS_CHECK(!in.bad(), "cannot read tokenizer file '", path, "'");
  return buf.str();
}

}  // namespace

// ---- Pre-tokenization ----------------------------------------------------------------------

std::vector<std::string_view> pretokenize(std::string_view text) {
  const std::vector<CodePoint> cps = decode_all(text);
  const size_t m = cps.size() - 1;  // code points, without the sentinel
  std::vector<std::string_view> pieces;
  const auto emit = [&](size_t from, size_t to) {
    pieces.push_back(text.substr(cps[from].offset, cps[to].offset - cps[from].offset));
  };
  const auto run_end = [&](size_t k, CharClass cls) {
    while (k < m && cps[k].cls == cls) ++k;
    return k;
  };
  for (size_t k = 0; k < m;) {
    if (const size_t len = contraction_at(cps, k, m)) {  // 's 't 're 've 'm 'll 'd
      emit(k, k + len);
      k += len;
      continue;
    }
    // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional leading space, then a run.
    const size_t start =
        (cps[k].cp == ' ' && k + 1 < m && cps[k + 1].cls != CharClass::kSpace) ? k + 1 : k;
    if (cps[start].cls != CharClass::kSpace) {
      const size_t end = run_end(start, cps[start].cls);
      emit(k, end);
      k = end;
      continue;
    }
    // "\s+(?!\S)" leaves the run's last space to the next token; "\s+" takes a lone one.
    const size_t end = run_end(k, CharClass::kSpace);
    const size_t stop = (end == m || end - k == 1) ? end : end - 1;
    emit(k, stop);
    k = stop;
  }
  return pieces;
}

// ---- Tokenizer -----------------------------------------------------------------------------

Tokenizer::Tokenizer(std::vector<std::string> tokens, std::vector<Merge> merges)
    : tokens_(std::move(tokens)), merges_(std::move(merges)) {
  byte_ids_.fill(-1);
  for (size_t id = 0; id + 1 < tokens_.size(); ++id) {
    if (tokens_[id].size() == 1) {
      byte_ids_[static_cast<uint8_t>(tokens_[id][0])] = static_cast<int32_t>(id);
    }
  }
  rank_.reserve(merges_.size());
  for (size_t r = 0; r < merges_.size(); ++r) {
    rank_.emplace(pair_key(merges_[r].left, merges_[r].right), static_cast<int32_t>(r));
  }
}

Tokenizer Tokenizer::train(const std::vector<std::string>& documents, int vocab_size) {
  TS_CHECK_GE(vocab_size, 257, "vocab_size must hold the 256 byte tokens and <|endoftext|>");
  std::unordered_map<std::string_view, int64_t> piece_counts;
  for (const std::string& doc : documents) {
    for (std::string_view piece : pretokenize(doc)) ++piece_counts[piece];
  }
  std::vector<std::pair<std::string_view, int64_t>> sorted(piece_counts.begin(),
                                                           piece_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& [piece, count] : sorted) {
    Word w{std::vector<int32_t>(piece.size()), count};
    for (size_t i = 0; i < piece.size(); ++i) w.ids[i] = static_cast<uint8_t>(piece[i]);
    words.push_back(std::move(w));
  }

  std::vector<std::string> tokens(256);
  std::unordered_map<std::string, int32_t> token_ids;
  for (int b = 0; b < 256; ++b) {
    tokens[b] = std::string(1, static_cast<char>(b));
    token_ids.emplace(tokens[b], b);
  }
  std::vector<Merge> merges;
  PairCounts counts(words);
  const size_t target = static_cast<size_t>(vocab_size) - 1;  // eot comes last
  while (tokens.size() < target) {
    PairKey pair = 0;
    TS_CHECK(counts.best(pair), "the training documents support only ", tokens.size() + 1,
             " tokens but vocab_size is ", vocab_size, ": lower vocab_size or train on more text");
    const int32_t left = pair_left(pair), right = pair_right(pair);
    std::string bytes = tokens[left] + tokens[right];
    // Should two merges ever spell the same bytes ("a"+"bc", "ab"+"c"), they share one token,
    // as in Hugging Face's trainer, and training goes on until the vocabulary is full.
    auto [it, added] = token_ids.emplace(bytes, static_cast<int32_t>(tokens.size()));
    if (added) tokens.push_back(std::move(bytes));
    merges.push_back({left, right, it->second});
    counts.merge(pair, it->second);
  }
  tokens.emplace_back(kEndOfText);
  return Tokenizer(std::move(tokens), std::move(merges));
}

void Tokenizer::encode_pretoken(std::string_view piece, std::vector<int32_t>& out) const {
  std::vector<int32_t> ids(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) ids[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
  while (ids.size() > 1) {
    int32_t best = std::numeric_limits<int32_t>::max();
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const auto it = rank_.find(pair_key(ids[i], ids[i + 1]));
      if (it != rank_.end() && it->second < best) best = it->second;
    }
    if (best == std::numeric_limits<int32_t>::max()) break;
    const Merge& m = merges_[best];
    merge_in_place(ids, m.left, m.right, m.result);
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  for (std::string_view piece : pretokenize(text)) encode_pretoken(piece, out);
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  TS_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary [0, ",
           vocab_size(), ")");
  return tokens_[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    TS_CHECK(id >= 0 && id < vocab_size(), "cannot decode token id ", id,
             ": the vocabulary holds ids [0, ", vocab_size(), ")");
    out += tokens_[id];
  }
  return out;
}

void Tokenizer::save(const std::string& path) const {
  using Json = nlohmann::ordered_json;
  Json vocab = Json::object();
  for (int32_t id = 0; id < eot_id(); ++id) vocab[bytes_to_vocab_string(tokens_[id])] = id;
  vocab[std::string(kEndOfText)] = eot_id();
  Json merges = Json::array();
  for (const Merge& m : merges_) {
    merges.push_back(bytes_to_vocab_string(tokens_[m.left]) + " " +
                     bytes_to_vocab_string(tokens_[m.right]));
  }
  const auto byte_level = [](bool add_prefix_space, bool trim_offsets) {
    return Json{{"type", "ByteLevel"},
                {"add_prefix_space", add_prefix_space},
                {"trim_offsets", trim_offsets},
                {"use_regex", true}};
  };
  const Json doc = {{"version", "1.0"},
                    {"truncation", nullptr},
                    {"padding", nullptr},
                    {"added_tokens", Json::array({Json{{"id", eot_id()},
                                                       {"content", std::string(kEndOfText)},
                                                       {"single_word", false},
                                                       {"lstrip", false},
                                                       {"rstrip", false},
                                                       {"normalized", true},
                                                       {"special", true}}})},
                    {"normalizer", nullptr},
                    {"pre_tokenizer", byte_level(false, true)},
                    {"post_processor", byte_level(true, false)},
                    {"decoder", byte_level(true, true)},
                    {"model", Json{{"type", "BPE"},
                                   {"dropout", nullptr},
                                   {"unk_token", nullptr},
                                   {"continuing_subword_prefix", ""},
                                   {"end_of_word_suffix", ""},
                                   {"fuse_unk", false},
                                   {"byte_fallback", false},
                                   {"vocab", std::move(vocab)},
                                   {"merges", std::move(merges)}}}};

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TS_CHECK(out, "cannot write tokenizer file '", tmp, "': check that the folder exists and is ",
             "writable");
    out << doc.dump(2) << '\n';
    out.close();
    TS_CHECK(out, "failed writing tokenizer file '", tmp, "' (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  TS_CHECK(!ec, "cannot move '", tmp, "' to '", path, "': ", ec.message());
}

Tokenizer Tokenizer::load(const std::string& path) {
  using Json = nlohmann::json;
  const std::string text = read_file(path);
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::exception& e) {
    TS_THROW("tokenizer file '", path, "' is not valid JSON: ", e.what());
  }
  const auto fail = [&](const auto&... what) {
    TS_THROW("tokenizer file '", path, "': ", what...);
  };
  try {
    const Json& model = doc.at("model");
    if (model.value("type", std::string()) != "BPE") fail("model.type must be \"BPE\"");
    const Json& vocab = model.at("vocab");
    if (!vocab.is_object()) fail("model.vocab must be an object");

    // Every id 0..V-1 once: the vocabulary plus <|endoftext|> (from added_tokens if need be).
    std::vector<std::string> tokens(vocab.size() + 1);
    std::vector<bool> seen(vocab.size() + 1, false);
    int64_t eot = -1;
    const auto place = [&](int64_t id, const std::string& bytes, const std::string& shown) {
      if (id < 0 || id >= static_cast<int64_t>(seen.size())) {
        fail("token '", shown, "' has id ", id, " outside the vocabulary's ", vocab.size(), " ids");
      }
      if (seen[id] && tokens[id] != bytes) fail("id ", id, " is used by two tokens");
      seen[id] = true;
      tokens[id] = bytes;
    };
    std::unordered_map<std::string, int32_t> ids_by_string;
    for (const auto& [key, value] : vocab.items()) {
      const int64_t id = value.get<int64_t>();
      std::string bytes;
      if (key == kEndOfText) {
        eot = id;
        bytes = key;
      } else if (!vocab_string_to_bytes(key, bytes)) {
        fail("vocabulary token '", key, "' is not in GPT-2's byte-level alphabet");
      }
      place(id, bytes, key);
      ids_by_string.emplace(key, static_cast<int32_t>(id));
    }
    for (const Json& added : doc.value("added_tokens", Json::array())) {
      if (added.at("content").get<std::string>() != kEndOfText) {
        fail("added token '", added.at("content").get<std::string>(),
             "' is not supported (only <|endoftext|>)");
      }
      const int64_t id = added.at("id").get<int64_t>();
      if (eot >= 0 && eot != id) fail("<|endoftext|> has two ids, ", eot, " and ", id);
      eot = id;
      place(id, std::string(kEndOfText), std::string(kEndOfText));
    }
    if (eot < 0) fail("no <|endoftext|> token");
    if (!seen.back()) {  // <|endoftext|> was not counted in the vocabulary object
      tokens.pop_back();
      seen.pop_back();
    }
    if (eot != static_cast<int64_t>(tokens.size()) - 1) {
      fail("<|endoftext|> has id ", eot, " but must be the last id, ", tokens.size() - 1);
    }
    for (size_t id = 0; id < seen.size(); ++id) {
      if (!seen[id]) fail("the vocabulary has no token with id ", id);
    }
    std::vector<bool> have_byte(256, false);
    for (size_t id = 0; id + 1 < tokens.size(); ++id) {
      if (tokens[id].size() == 1) have_byte[static_cast<uint8_t>(tokens[id][0])] = true;
    }
    for (int b = 0; b < 256; ++b) {
      if (!have_byte[b]) fail("the vocabulary lacks the token for byte ", b);
    }

    std::vector<Merge> merges;
    const Json& merge_list = model.at("merges");
    for (size_t r = 0; r < merge_list.size(); ++r) {
      const Json& entry = merge_list[r];
      std::string left, right;
      if (entry.is_string()) {  // "Ġ t"
        const std::string s = entry.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          fail("merge ", r, " '", s, "' is not two tokens separated by one space");
        }
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {  // ["Ġ", "t"] (newer tokenizers versions)
        left = entry.at(0).get<std::string>();
        right = entry.at(1).get<std::string>();
      }
      const auto find = [&](const std::string& s) {
        const auto it = ids_by_string.find(s);
        if (it == ids_by_string.end()) {
          fail("merge ", r, " '", left, " ", right, "' needs token '", s,
               "', which is not in the vocabulary");
        }
        return it->second;
      };
      merges.push_back({find(left), find(right), find(left + right)});
    }
    return Tokenizer(std::move(tokens), std::move(merges));
  } catch (const Json::exception& e) {
    TS_THROW("tokenizer file '", path, "' does not have the tokenizer.json layout: ", e.what());
  }
}

}  // namespace tessera
