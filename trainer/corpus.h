// The Brown Corpus (scripts/fetch_corpus.sh unpacks it): 500 tagged documents turned back into
// plain, readable English text for tokenizer training and language modelling.
#pragma once

#include <string>
#include <vector>

namespace tessera {

// Reads every document file in `dir` (names matching [a-r][a-z][0-9][0-9], in name order; other
// files such as README or cats.txt are skipped), strips the part-of-speech tags and detokenizes
// each document: one string per document, paragraphs joined by "\n". Throws Error with the fetch
// command when `dir` is missing or holds no document, and naming the file when one is unreadable.
std::vector<std::string> load_brown_corpus(const std::string& dir);

// One tagged document's text ("The/at jury/nn said/vbd ./." -> "The jury said."): blocks
// separated by blank lines are paragraphs, headline lines (tags ending in -hl) are paragraphs of
// their own, sentences of a paragraph are joined by one space.
std::string detokenize_brown_document(const std::string& tagged);

}  // namespace tessera
