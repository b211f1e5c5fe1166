#include "tests/support/train_fixture.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace tessera::testing {

namespace fs = std::filesystem;

void write_brown_like_corpus(const std::string& dir) {
  const char* words[] = {"the/at", "dog/nn", "cat/nn",     "ran/vbd", "sat/vbd", "on/in",
                         "a/at",   "mat/nn", "quickly/rb", "and/cc",  "jury/nn", "said/vbd"};
  std::mt19937_64 rng(99);
  fs::create_directories(dir);
  for (int d = 0; d < 40; ++d) {
    std::ostringstream doc;
    for (int p = 0; p < 4; ++p) {
      doc << "\n\n\t";
      for (int w = 0; w < 40; ++w) doc << words[rng() % 12] << ' ';
      doc << "./.";
    }
    const std::string name = std::string("c") + static_cast<char>('a' + d / 20) +
                             (d % 20 < 9 ? "0" : "") + std::to_string(d % 20 + 1);
    std::ofstream(fs::path(dir) / name) << doc.str();
  }
}

std::vector<std::string> tiny_job_overrides(const std::string& root, const std::string& run) {
  const fs::path r(root);
  return {"data.corpus_dir=" + (r / "corpus").string(),
          "data.dir=" + (r / "data").string(),
          "data.val_fraction=0.1",
          "checkpoint.dir=" + (r / run).string(),
          "model.n_layer=2",
          "model.n_head=2",
          "model.d_model=32",
          "model.vocab_size=280",
          "model.max_seq_len=16",
          "train.batch_size=4",
          "train.seq_len=16",
          "train.steps=12",
          "train.warmup_steps=2",
          "train.lr=0.01",
          "train.min_lr=0.001",
          "train.grad_accum=2",
          "eval.every=4",
          "eval.batches=2",
          "checkpoint.every=6",
          "checkpoint.keep=5",
          "sample.tokens=8",
          "threads=2"};
}

}  // namespace tessera::testing
