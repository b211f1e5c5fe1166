#include "launch/options.h"

#include <iostream>

namespace tessera::launch {

namespace po = boost::program_options;

bool parse_options(int argc, char** argv, const po::options_description& opts,
                   po::variables_map& vm, const char* action) {
  po::positional_options_description positional;
  if (action) positional.add(action, 1);
  po::store(po::command_line_parser(argc, argv).options(opts).positional(positional).run(), vm);
  if (vm.count("help")) {
    std::cout << opts;
    return false;
  }
  po::notify(vm);
  return true;
}

}  // namespace tessera::launch
