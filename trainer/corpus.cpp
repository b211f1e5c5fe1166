#include "trainer/corpus.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "core/error.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

struct TaggedWord {
  std::string_view word;
  std::string_view tag;
};

// "Atlanta's/np$" -> {"Atlanta's", "np$"}: the word is everything before the last '/'.
TaggedWord split_tag(std::string_view token) {
  const size_t slash = token.rfind('/');
  if (slash == std::string_view::npos || slash == 0) return {token, {}};
  return {token.substr(0, slash), token.substr(slash + 1)};
}

bool is_document_name(const std::string& name) {
  return name.size() == 4 && name[0] >= 'a' && name[0] <= 'r' && name[1] >= 'a' && name[1] <= 'z' &&
         std::isdigit(static_cast<unsigned char>(name[2])) &&
         std::isdigit(static_cast<unsigned char>(name[3]));
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

std::vector<TaggedWord> split_line(std::string_view line) {
  std::vector<TaggedWord> words;
  size_t i = 0;
  while (i < line.size()) {
    i = line.find_first_not_of(" \t\r", i);
    if (i == std::string_view::npos) break;
    size_t end = line.find_first_of(" \t\r", i);
    if (end == std::string_view::npos) end = line.size();
    const TaggedWord w = split_tag(line.substr(i, end - i));
    // This edition doubles sentence punctuation ("?/. ?/.", ";/. ;/."): keep one. A sentence's
    // final period after an abbreviation ("Jr./np ./.") is dropped as well.
    const bool repeated =
        !words.empty() && w.tag.starts_with('.') &&
        ((words.back().word == w.word && words.back().tag == w.tag) ||
         (w.word == "." && words.back().word.size() > 1 && words.back().word.ends_with('.')));
    if (!w.word.empty() && !repeated) words.push_back(w);
    i = end;
  }
  return words;
}

// A headline ("Merger/nn-hl proposed/vbn-hl"): at least half of its tags end in -hl.
bool is_headline(const std::vector<TaggedWord>& words) {
  size_t hl = 0;
  for (const TaggedWord& w : words) hl += w.tag.ends_with("-hl");
  return hl > 0 && 2 * hl >= words.size();
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Tokens written without a space before them: closing punctuation and split-off clitics.
bool attaches_left(std::string_view w) {
  static constexpr std::string_view kPunct[] = {",", ".", ";", ":", "?",   "!", ")",
                                                "]", "}", "%", "/", "...", "''"};
  static constexpr std::string_view kClitics[] = {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"};
  for (std::string_view p : kPunct) {
    if (w == p) return true;
  }
  for (std::string_view c : kClitics) {
    if (iequals(w, c)) return true;
  }
  return false;
}

// Tokens written without a space after them: opening brackets and quotes.
bool attaches_right(std::string_view w) {
  return w == "(" || w == "[" || w == "{" || w == "``" || w == "/";
}

// Joins one paragraph's words into text. A lone ' alternates between opening and closing quote.
// The tagged corpus puts , . ? ! after a closing quote; they move back inside ("...," he said).
std::string join_paragraph(std::vector<TaggedWord> words) {
  for (size_t i = 0; i + 1 < words.size(); ++i) {
    const std::string_view next = words[i + 1].word;
    if (words[i].word == "''" && (next == "," || next == "." || next == "?" || next == "!")) {
      std::swap(words[i], words[i + 1]);
      ++i;
    }
  }
  std::string out;
  bool glue_next = false;    // the previous token opened a bracket or quote
  bool single_open = false;  // inside '...'
  for (const TaggedWord& tw : words) {
    const std::string_view w = tw.word;
    bool left = attaches_left(w);
    bool right = attaches_right(w);
    if (w == "'") {
      left = single_open;
      right = !single_open;
      single_open = !single_open;
    }
    if (!out.empty() && !glue_next && !left) out += ' ';
    if (w == "``" || w == "''") {
      out += '"';
    } else {
      out += w;
    }
    glue_next = right;
  }
  return out;
}

}  // namespace

std::string detokenize_brown_document(const std::string& tagged) {
  std::vector<std::string> paragraphs;
  std::vector<TaggedWord> current;
  auto flush = [&] {
    if (!current.empty()) paragraphs.push_back(join_paragraph(current));
    current.clear();
  };
  std::string_view text = tagged;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (is_blank(line)) {
      flush();
      continue;
    }
    std::vector<TaggedWord> words = split_line(line);
    if (is_headline(words)) {
      flush();
      current = std::move(words);
      flush();
    } else {
      current.insert(current.end(), words.begin(), words.end());
    }
  }
  flush();
  std::string out;
  for (const std::string& p : paragraphs) {
    if (!out.empty()) out += '\n';
    out += p;
  }
  return out;
}

std::vector<std::string> load_brown_corpus(const std::string& dir) {
  // fetch_corpus.sh DEST unpacks into DEST/brown, so the advice depends on the folder's name.
  const fs::path path(dir);
  const std::string parent = path.has_parent_path() ? path.parent_path().string() : ".";
  const std::string not_found =
      path.filename() == "brown"
          ? detail::cat("Brown corpus not found in '", dir, "': run scripts/fetch_corpus.sh ",
                        parent)
          : detail::cat("Brown corpus not found in '", dir,
                        "': run scripts/fetch_corpus.sh data and set data.corpus_dir: data/brown");
  std::error_code ec;
  TS_CHECK(fs::is_directory(dir, ec), not_found);
  std::vector<fs::path> files;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    std::error_code entry_ec;  // an entry that cannot be inspected is not a document
    if (e.is_regular_file(entry_ec) && is_document_name(e.path().filename().string())) {
      files.push_back(e.path());
    }
  }
  TS_CHECK(!ec, "cannot list '", dir, "': ", ec.message());
  TS_CHECK(!files.empty(), not_found);
  std::sort(files.begin(), files.end());

  std::vector<std::string> documents;
  documents.reserve(files.size());
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    TS_CHECK(in, "cannot open Brown corpus file '", f.string(), "'");
    std::ostringstream buf;
    buf << in.rdbuf();
    TS_CHECK(!in.bad(), "cannot read Brown corpus file '", f.string(), "'");
    documents.push_back(detokenize_brown_document(buf.str()));
  }
  return documents;
}

}  // namespace tessera
