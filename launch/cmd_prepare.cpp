#include <boost/program_options.hpp>
#include <iostream>

#include "launch/commands.h"
#include "launch/options.h"
#include "trainer/job_data.h"

namespace tessera::launch {

namespace po = boost::program_options;

int cmd_prepare(int argc, char** argv) {
  po::options_description opts("tessera prepare");
  std::string config;
  std::vector<std::string> sets;
  opts.add_options()("help,h", "show this help")("config,c", po::value(&config)->required(),
                                                 "YAML job file")(
      "set,s", po::value(&sets)->composing(), "override a config key (repeatable)");
  po::variables_map vm;
  if (!parse_options(argc, argv, opts, vm)) return 0;
  const JobConfig job = load_job_config(config, sets);
  Logger log;
  const JobData d = prepare_job_data(job, log);
  std::cout << d.tokenizer_path << "\n" << d.train_path << "\n" << d.val_path << "\n";
  return 0;
}

}  // namespace tessera::launch
