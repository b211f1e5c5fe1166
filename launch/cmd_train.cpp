#include <boost/program_options.hpp>
#include <iostream>
#include <optional>

#include <mpi.h>

#include <cstdlib>

#include "launch/commands.h"
#include "launch/options.h"
#include "parallel/mpi_session.h"
#include "trainer/train_loop.h"

namespace tessera::launch {

namespace po = boost::program_options;

namespace {

// True when an MPI launcher (Open MPI's mpirun, or a PMI-based one such as srun) started us.
bool launched_by_mpirun() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(var)) return true;
  return false;
}

void print_summary(const JobConfig& job, const TrainSummary& s) {
  if (!s.val_losses.empty()) {
    std::cout << "\nvalidation loss by step:";
    for (const auto& [step, loss] : s.val_losses) std::cout << "  " << step << ": " << loss;
    std::cout << "\n";
  }
  if (s.tokens_per_second > 0) std::cout << "throughput: " << s.tokens_per_second << " tokens/s\n";
  if (!s.sample.empty())
    std::cout << "\nsample (prompt '" << job.sample.prompt << "'):\n" << s.sample << "\n";
  if (!s.checkpoint.empty()) std::cout << "\ncheckpoint: " << s.checkpoint << "\n";
}

}  // namespace

int cmd_train(int argc, char** argv) {
  po::options_description opts("tessera train");
  std::string config;
  std::vector<std::string> sets;
  opts.add_options()("help,h", "show this help")("config,c", po::value(&config)->required(),
                                                 "YAML job file, e.g. configs/tiny.yaml")(
      "set,s", po::value(&sets)->composing(),
      "override a config key, e.g. --set train.steps=100 (repeatable)");
  po::variables_map vm;
  if (!parse_options(argc, argv, opts, vm)) return 0;

  if (!launched_by_mpirun()) {
    const JobConfig job = load_job_config(config, sets);
    Logger log;
    log.info("job '" + job.name + "' from " + job.path);
    print_summary(job, run_training(job, log));
    return 0;
  }
  // Under mpirun: every rank runs the job; rank 0 prints progress, every rank prints its own
  // errors (with its rank) and then aborts the whole job, so no rank is left waiting. The abort
  // comes before the communicators are destroyed: their destructors would first wait up to the
  // timeout for operations a dead rank never completes.
  parallel::MpiSession mpi;
  Logger log(mpi.world_rank(), mpi.world_rank() == 0 ? LogLevel::info : LogLevel::warn, &std::cerr,
             mpi.world_size());
  // What to tell the user: an Error's message without its source location.
  auto message_of = [](const std::exception& e) {
    const Error* err = dynamic_cast<const Error*>(&e);
    return err ? err->message() : std::string(e.what());
  };
  auto abort_job = [&](const std::exception& e) {
    log.error("tessera train: " + message_of(e));
    MPI_Abort(MPI_COMM_WORLD, 1);
  };
  // A bad job file fails every rank the same way: said once, by rank 0, and every rank exits
  // with 1. A rank that alone fails to read it (a file missing on one node) says so and aborts.
  std::optional<JobConfig> loaded;
  std::string config_error;
  try {
    loaded = load_job_config(config, sets);
  } catch (const std::exception& e) {
    config_error = message_of(e);
  }
  int ok = loaded.has_value() ? 1 : 0, all_ok = 0, any_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&ok, &any_ok, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (!any_ok) {
    if (mpi.world_rank() == 0) log.error("tessera train (every rank): " + config_error);
    return 1;
  }
  if (!all_ok) {
    if (!ok) log.error("tessera train: " + config_error);
    MPI_Barrier(MPI_COMM_WORLD);  // the failing ranks have printed
    if (mpi.world_rank() == 0) MPI_Abort(MPI_COMM_WORLD, 1);
  }
  try {
    const JobConfig& job = *loaded;
    log.info("job '" + job.name + "' from " + job.path + " on " + std::to_string(mpi.world_size()) +
             " ranks");
    const parallel::GridShape shape{static_cast<int>(job.parallel.tp),
                                    static_cast<int>(job.parallel.pp),
                                    static_cast<int>(job.parallel.dp)};
    parallel::ParallelContext ctx = parallel::make_mpi_context(shape, job.parallel.timeout_s);
    try {
      const TrainSummary summary = run_training(job, log, ctx);
      if (mpi.world_rank() == 0) print_summary(job, summary);
    } catch (const std::exception& e) {
      abort_job(e);
    }
  } catch (const std::exception& e) {
    abort_job(e);
  }
  return 0;
}

}  // namespace tessera::launch
