#include "trainer/job_data.h"

#include <chrono>
#include <filesystem>

#include "trainer/corpus.h"
#include "trainer/dataset.h"

namespace tessera {

JobData prepare_job_data(const JobConfig& job, Logger& log) {
  namespace fs = std::filesystem;
  const fs::path dir = job.data.dir;
  JobData d{(dir / "tokenizer.json").string(), (dir / "train.bin").string(),
            (dir / "val.bin").string()};
  if (fs::exists(d.tokenizer_path) && fs::exists(d.train_path) && fs::exists(d.val_path)) {
    const Tokenizer tok = Tokenizer::load(d.tokenizer_path);
    TS_CHECK(tok.vocab_size() == job.model.vocab_size, d.tokenizer_path, " has ", tok.vocab_size(),
             " tokens but model.vocab_size is ", job.model.vocab_size, ": delete ", job.data.dir,
             " to rebuild it, or set data.dir to another folder");
    return d;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<std::string> docs = load_brown_corpus(job.data.corpus_dir);
  log.info("corpus: " + std::to_string(docs.size()) + " documents from " + job.data.corpus_dir);
  const Tokenizer tok = Tokenizer::train(docs, static_cast<int>(job.model.vocab_size));
  fs::create_directories(dir);
  const PrepareResult r = prepare_dataset(docs, tok, job.data.val_fraction, job.data.dir);
  // The tokenizer goes last: its presence marks the folder complete.
  tok.save(d.tokenizer_path);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log.info("tokenizer: " + std::to_string(tok.vocab_size()) +
           " tokens; shards: " + std::to_string(r.train_tokens) + " train / " +
           std::to_string(r.val_tokens) + " val tokens in " + job.data.dir + " (" +
           std::to_string(static_cast<int>(secs)) + " s)");
  return d;
}

}  // namespace tessera
