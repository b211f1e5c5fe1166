// The command line of one `tessera` subcommand.
#pragma once

#include <boost/program_options.hpp>

namespace tessera::launch {

// Parses argv against `opts` into vm. Bare words fill the option named `action` (one word, e.g.
// "what" for `tessera bench train`) or, with none, are an error rather than dropped silently.
// Returns false after printing the options when --help was given; throws
// boost::program_options::error for anything else wrong (main() reports it).
bool parse_options(int argc, char** argv, const boost::program_options::options_description& opts,
                   boost::program_options::variables_map& vm, const char* action = nullptr);

}  // namespace tessera::launch
