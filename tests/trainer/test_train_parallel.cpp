// `tessera train` under mpirun: for every layout of tensor, pipeline and data parallelism the world
// allows and ZeRO stages 0-3, the losses and final weights are those of one process, and a
// checkpoint saved under one layout resumes under another with the same next losses.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "core/safetensors.h"
#include "tests/support/numeric.h"
#include "tests/support/train_fixture.h"
#include "trainer/job_data.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/train_loop.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

class TrainParallel : public ::testing::Test {
 protected:
  void SetUp() override {
    uint64_t seed = testing::test_seed();
    MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    root_ = fs::temp_directory_path() / ("tessera_train_par_" + std::to_string(seed));
    if (world_rank() == 0) {
      fs::remove_all(root_);
      testing::write_brown_like_corpus((root_ / "corpus").string());
      prepare_job_data(job("prep"), log_);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  void TearDown() override {
    MPI_Barrier(MPI_COMM_WORLD);
    if (world_rank() == 0) fs::remove_all(root_);
  }

  // The fixture's tiny job with 4 layers (2 virtual stages of 1 layer on each of 2 ranks) and 4
  // micro-batches per step (more than the 2 stages: 1F1B and interleaving reach their steady
  // state) for 8 steps, eps 1e-6 (see test_zero.cpp: with 1e-8, round-off-level gradients take
  // ±lr steps whose sign depends on the summation order).
  JobConfig job(const std::string& run, std::vector<std::string> extra = {}) {
    std::vector<std::string> o = testing::tiny_job_overrides(root_.string(), run);
    for (const char* s : {"train.steps=8", "train.eps=1e-6", "checkpoint.every=4", "eval.every=4",
                          "sample.tokens=0", "threads=1", "checkpoint.resume=none",
                          "model.n_layer=4", "train.grad_accum=4"})
      o.push_back(s);
    o.insert(o.end(), extra.begin(), extra.end());
    return parse_job_config("name: test\n", "test.yaml", o);
  }

  TrainSummary train_mpi(const JobConfig& j) {
    const parallel::GridShape shape{static_cast<int>(j.parallel.tp),
                                    static_cast<int>(j.parallel.pp),
                                    static_cast<int>(j.parallel.dp)};
    parallel::ParallelContext ctx = parallel::make_mpi_context(shape, 60.0);
    return run_training(j, log_, ctx);
  }

  // Rank 0: every weight of two checkpoints (either kind) agrees (key bias left out, as in
  // test_zero.cpp).
  void expect_same_weights(const std::string& a, const std::string& b) {
    const CheckpointReader ra(a), rb(b);
    const ParameterSet all = Gpt2::whole_parameters(ra.config());
    for (const ParameterEntry& e : all.entries()) {
      std::vector<double> x = testing::to_f64(ra.whole("params", e.name));
      std::vector<double> y = testing::to_f64(rb.whole("params", e.name));
      if (e.name.ends_with("c_attn.bias")) {
        x = testing::without_key_bias(x);
        y = testing::without_key_bias(y);
      }
      EXPECT_LT(testing::rel_error(x, y), 1e-4) << e.name;
    }
  }

  fs::path root_;
  std::ostringstream log_text_;
  Logger log_{0, LogLevel::warn, &log_text_};
};

void expect_same_losses(const std::vector<double>& got, const std::vector<double>& want,
                        size_t offset = 0) {
  ASSERT_LE(got.size() + offset, want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[offset + i], 1e-5 * std::abs(want[offset + i]))
        << "step " << offset + i + 1;
}

// Every layout of the world with tp, pp ∈ {1, 2} (dp fills the rest and must split the batch of
// 4) and every ZeRO stage gives the losses, validation losses and final weights of one process
// (1F1B; also GPipe at ZeRO-1, interleaved 1F1B over 2 virtual stages per rank at ZeRO-0 and 3,
// and sequence parallelism at ZeRO-1 and 3). The step-4 checkpoint of the layout with the most
// parallelism at ZeRO-3 — (tp 2, pp 2, dp 2) at world 8 — resumes in one process, under (tp 2,
// pp 1, dp = world / 2, ZeRO-1) and interleaved under (pp 2, 2 virtual stages, ZeRO-1) with the
// same losses for steps 5-8; so does the interleaved ZeRO-3 run's in one process.
TEST_F(TrainParallel, EveryLayoutMatchesOneProcessAndCheckpointsMoveBetweenLayouts) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  // One process, the reference (every rank computes it; only the ranks' own files differ).
  const std::string own = "ref_" + std::to_string(world_rank());
  const TrainSummary ref = run_training(job(own), log_);
  ASSERT_EQ(ref.train_losses.size(), 8u);

  std::string saved, saved_interleaved;
  for (int pp : {1, 2})
    for (int tp : {1, 2}) {
      if (world % (tp * pp) != 0 || 4 % (world / (tp * pp)) != 0) continue;
      for (int zero = 0; zero <= 3; ++zero) {
        const std::string layout = "tp" + std::to_string(tp) + "pp" + std::to_string(pp) + "dp" +
                                   std::to_string(world / (tp * pp)) + "z" + std::to_string(zero);
        for (const std::string variant : {"1f1b", "gpipe", "1f1b-sp", "1f1b-v2"}) {
          if (variant == "gpipe" && (pp == 1 || zero != 1)) continue;
          if (variant == "1f1b-sp" && (tp == 1 || zero % 2 == 0)) continue;  // sequence parallel
          if (variant == "1f1b-v2" && (pp == 1 || zero % 3 != 0)) continue;  // interleaved
          SCOPED_TRACE(layout + " " + variant);
          const std::string run = layout + variant;
          const TrainSummary s = train_mpi(job(
              run, {"parallel.tp=" + std::to_string(tp), "parallel.pp=" + std::to_string(pp),
                    "parallel.zero=" + std::to_string(zero),
                    "parallel.schedule=" + variant.substr(0, variant.find('-')),
                    std::string("parallel.sequence_parallel=") +
                        (variant == "1f1b-sp" ? "true" : "false"),
                    std::string("parallel.virtual_stages=") + (variant == "1f1b-v2" ? "2" : "1")}));
          expect_same_losses(s.train_losses, ref.train_losses);
          ASSERT_EQ(s.val_losses.size(), ref.val_losses.size());
          for (size_t i = 0; i < s.val_losses.size(); ++i)
            EXPECT_NEAR(s.val_losses[i].second, ref.val_losses[i].second,
                        1e-5 * ref.val_losses[i].second);
          if (world_rank() == 0)
            expect_same_weights((root_ / run / "checkpoints/step_000008").string(),
                                (root_ / own / "checkpoints/step_000008").string());
          if (zero == 3 && variant == "1f1b") saved = run;  // the last ones win
          if (zero == 3 && variant == "1f1b-v2") saved_interleaved = run;
        }
      }
    }

  ASSERT_FALSE(saved.empty());
  SCOPED_TRACE("resuming the step-4 checkpoint of " + saved);
  const std::string step4 = (root_ / saved / "checkpoints/step_000004").string();
  const TrainSummary one =
      run_training(job(own + "_resumed", {"checkpoint.resume=" + step4}), log_);
  EXPECT_EQ(one.first_step, 4);
  expect_same_losses(one.train_losses, ref.train_losses, 4);
  const int tp = world % 2 == 0 && 4 % (world / 2) == 0 ? 2 : 1;
  const TrainSummary other =
      train_mpi(job("resumed_elsewhere", {"checkpoint.resume=" + step4,
                                          "parallel.tp=" + std::to_string(tp), "parallel.zero=1"}));
  EXPECT_EQ(other.first_step, 4);
  expect_same_losses(other.train_losses, ref.train_losses, 4);
  // Two pipeline stages need an even world whose dp still splits the batch (every world the CMake
  // file runs this under: 2, 4 and 8 ranks; a single process stops here).
  if (world % 2 != 0 || 4 % (world / 2) != 0) return;
  const TrainSummary interleaved =
      train_mpi(job("resumed_interleaved", {"checkpoint.resume=" + step4, "parallel.pp=2",
                                            "parallel.virtual_stages=2", "parallel.zero=1"}));
  EXPECT_EQ(interleaved.first_step, 4);
  expect_same_losses(interleaved.train_losses, ref.train_losses, 4);

  ASSERT_FALSE(saved_interleaved.empty());
  SCOPED_TRACE("resuming the step-4 checkpoint of " + saved_interleaved);
  const TrainSummary from_interleaved =
      run_training(job(own + "_from_interleaved",
                       {"checkpoint.resume=" +
                        (root_ / saved_interleaved / "checkpoints/step_000004").string()}),
                   log_);
  EXPECT_EQ(from_interleaved.first_step, 4);
  expect_same_losses(from_interleaved.train_losses, ref.train_losses, 4);
}

TEST_F(TrainParallel, BatchThatDoesNotSplitIsOneClearError) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world == 1) GTEST_SKIP() << "every batch splits over one rank";
  try {
    train_mpi(job("bad", {"train.batch_size=" + std::to_string(world + 1)}));
    FAIL() << "trained with a batch that does not split over dp";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of the data-parallel degree"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tessera
