// A job's data: the tokenizer and the train/val token shards under data.dir, built from the
// corpus the first time a job needs them and reused after.
#pragma once

#include <string>

#include "core/log.h"
#include "trainer/job_config.h"
#include "trainer/tokenizer.h"

namespace tessera {

struct JobData {
  std::string tokenizer_path;  // <data.dir>/tokenizer.json
  std::string train_path;      // <data.dir>/train.bin
  std::string val_path;        // <data.dir>/val.bin
};

// Ensures the tokenizer and shards exist (trains the BPE tokenizer on the corpus and tokenizes it
// when they do not) and checks the tokenizer's vocabulary against model.vocab_size. Throws Error
// with the fix when the corpus is missing or the files disagree with the config.
JobData prepare_job_data(const JobConfig& job, Logger& log);

}  // namespace tessera
