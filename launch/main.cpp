// tessera: the command line. `tessera <command> --help` lists a command's options.
#include <boost/program_options/errors.hpp>
#include <cstring>
#include <iostream>
#include <string>

#include "core/error.h"
#include "launch/commands.h"

namespace {

constexpr const char* kUsage =
    "usage: tessera <command> [options]\n"
    "\n"
    "commands:\n"
    "  train      train a model from a YAML job file (tessera train --config configs/tiny.yaml)\n"
    "  prepare    build a job's tokenizer and token shards without training\n"
    "  generate   sample text from a checkpoint\n"
    "  bench      time training steps (tessera bench train --config configs/tiny.yaml)\n"
    "  checkpoint convert a checkpoint to another layout or to one folder\n"
    "             (tessera checkpoint convert --from DIR --to DIR [--tp 2 --pp 2 --dp 2])\n"
    "\n"
    "run 'tessera <command> --help' for a command's options\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "train") return tessera::launch::cmd_train(argc - 1, argv + 1);
    if (cmd == "prepare") return tessera::launch::cmd_prepare(argc - 1, argv + 1);
    if (cmd == "generate") return tessera::launch::cmd_generate(argc - 1, argv + 1);
    if (cmd == "bench") return tessera::launch::cmd_bench(argc - 1, argv + 1);
    if (cmd == "checkpoint") return tessera::launch::cmd_checkpoint(argc - 1, argv + 1);
    std::cerr << "tessera: unknown command '" << cmd << "'\n\n" << kUsage;
    return 2;
  } catch (const boost::program_options::too_many_positional_options_error& e) {
    std::cerr << "tessera " << cmd << ": " << e.what()
              << ": every option starts with -- (config keys: --set key=value); see 'tessera "
              << cmd << " --help'\n";
    return 2;
  } catch (const boost::program_options::error& e) {
    std::cerr << "tessera " << cmd << ": " << e.what() << " (see 'tessera " << cmd << " --help')\n";
    return 2;
  } catch (const tessera::Error& e) {
    // The message says what to change; the source location follows for bug reports.
    std::cerr << "tessera " << cmd << ": error: " << e.message() << "  ["
              << e.file().substr(e.file().find_last_of('/') == std::string::npos
                                     ? 0
                                     : e.file().find_last_of('/') + 1)
              << ":" << e.line() << "]\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tessera " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
