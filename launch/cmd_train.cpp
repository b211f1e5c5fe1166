#include <boost/program_options.hpp>
#include <iostream>

#include "launch/commands.h"
#include "trainer/train_loop.h"

namespace tessera::launch {

namespace po = boost::program_options;

int cmd_train(int argc, char** argv) {
  po::options_description opts("tessera train");
  std::string config;
  std::vector<std::string> sets;
  opts.add_options()("help,h", "show this help")(
      "config,c", po::value(&config)->required(), "YAML job file, e.g. configs/tiny.yaml")(
      "set,s", po::value(&sets)->composing(),
      "override a config key, e.g. --set train.steps=100 (repeatable)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, opts), vm);
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  po::notify(vm);

  const JobConfig job = load_job_config(config, sets);
  Logger log;
  log.info("job '" + job.name + "' from " + job.path);
  const TrainSummary s = run_training(job, log);
  if (!s.val_losses.empty()) {
    std::cout << "\nvalidation loss by step:";
    for (const auto& [step, loss] : s.val_losses) std::cout << "  " << step << ": " << loss;
    std::cout << "\n";
  }
  if (s.tokens_per_second > 0) std::cout << "throughput: " << s.tokens_per_second << " tokens/s\n";
  if (!s.sample.empty())
    std::cout << "\nsample (prompt '" << job.sample.prompt << "'):\n" << s.sample << "\n";
  if (!s.checkpoint.empty()) std::cout << "\ncheckpoint: " << s.checkpoint << "\n";
  return 0;
}

}  // namespace tessera::launch
