// Byte-level BPE tokenizer in the manner of GPT-2: text is split into pre-tokens by GPT-2's
// pattern, each pre-token's UTF-8 bytes are merged pairwise by learned merges, and any byte
// sequence (valid UTF-8 or not) round-trips through encode/decode. Saved and loaded as a
// Hugging Face tokenizer.json (BPE model, ByteLevel pre-tokenizer and decoder).
//
// Pre-tokenization implements GPT-2's regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// by hand. \s is Unicode's White_Space property. \p{L} and \p{N} come from a built-in table
// that is exact (as of Unicode 15) in these blocks: ASCII, Latin-1, Latin Extended A/B and
// Additional, IPA and spacing modifiers, Greek (and Extended), Cyrillic, Armenian, Hebrew,
// Arabic, Devanagari, Thai, Hangul (Jamo and syllables), general punctuation through enclosed
// alphanumerics (U+2000-U+24FF: super/subscripts, letterlike symbols, number forms), CJK symbols
// and kana, CJK ideographs (with compatibility ideographs and extensions B+), halfwidth and
// fullwidth forms. Approximation: code points of all other blocks (Georgian, Ethiopic, Bengali,
// Tamil, ...) count as punctuation/other, where GPT-2 may see letters or digits; emoji and
// symbols are punctuation/other in both. Each byte that is not part of valid UTF-8 is a
// punctuation/other code point of its own, so any byte string round-trips.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tessera {

// Splits text into GPT-2 pre-tokens (views into `text`, in order; they concatenate to `text`).
std::vector<std::string_view> pretokenize(std::string_view text);

class Tokenizer {
 public:
  // The special token that delimits documents; its id is vocab_size() - 1.
  static constexpr std::string_view kEndOfText = "<|endoftext|>";

  // One learned merge: tokens `left` and `right` (adjacent) become `result`.
  struct Merge {
    int32_t left, right, result;
  };

  // Learns byte-level BPE on `documents`: ids 0..255 are the bytes, then one token per merge,
  // then <|endoftext|> at vocab_size - 1. The most frequent adjacent pair (counted over
  // pre-tokens) is merged first; ties go to the smallest (left id, right id). Deterministic.
  // Throws Error when vocab_size < 257 or the documents hold too few distinct pairs to fill it.
  static Tokenizer train(const std::vector<std::string>& documents, int vocab_size);

  // Reads a Hugging Face tokenizer.json with a byte-level BPE model whose last id is
  // <|endoftext|> (the form save() writes; GPT-2's own file also loads). Throws Error naming the
  // file for a missing file, bad JSON, or a vocabulary and merges that do not fit together.
  static Tokenizer load(const std::string& path);

  // Writes the Hugging Face tokenizer.json form atomically (path.tmp, then rename). Throws Error
  // naming the file when it cannot be written.
  void save(const std::string& path) const;

  // Token ids of `text`. Plain text only: "<|endoftext|>" inside `text` is encoded as ordinary
  // characters; callers insert eot_id() themselves. Const and free of shared mutable state, so
  // several threads may encode at once.
  std::vector<int32_t> encode(std::string_view text) const;

  // The bytes of the tokens concatenated; eot_id() decodes to "<|endoftext|>". Throws Error on
  // an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;

  int32_t eot_id() const { return static_cast<int32_t>(tokens_.size()) - 1; }
  int vocab_size() const { return static_cast<int>(tokens_.size()); }
  // The bytes one token stands for ("<|endoftext|>" for eot_id()); throws Error when out of range.
  std::string token_bytes(int32_t id) const;
  // The merges in rank order (lowest rank is applied first).
  const std::vector<Merge>& merges() const { return merges_; }

 private:
  // Builds the lookup tables from the token strings (eot last) and the merges.
  Tokenizer(std::vector<std::string> tokens, std::vector<Merge> merges);
  // Appends the ids of one pre-token to `out`.
  void encode_pretoken(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;             // id -> bytes; the last is <|endoftext|>
  std::array<int32_t, 256> byte_ids_{};         // byte value -> id of its one-byte token
  std::vector<Merge> merges_;                   // in rank order
  std::unordered_map<uint64_t, int32_t> rank_;  // (left << 32 | right) -> rank in merges_
};

}  // namespace tessera
