// tessera checkpoint convert: rewrites a checkpoint (consolidated or sharded, any layout) for
// another layout, or as one consolidated folder that Hugging Face transformers opens.
#include <boost/program_options.hpp>
#include <iostream>
#include <sstream>

#include "launch/commands.h"
#include "launch/options.h"
#include "trainer/sharded_checkpoint.h"

namespace tessera::launch {

namespace po = boost::program_options;

namespace {

// "2,2" -> {2, 2}; throws Error naming the option otherwise.
std::vector<int64_t> parse_counts(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      out.push_back(std::stoll(item, &used));
      TS_CHECK(used == item.size(), "");
    } catch (const std::exception&) {
      TS_THROW("--layers-per-stage '", text, "' must be comma-separated layer counts, e.g. 3,3");
    }
  }
  return out;
}

}  // namespace

int cmd_checkpoint(int argc, char** argv) {
  po::options_description opts(
      "tessera checkpoint convert --from DIR --to DIR [--tp N --pp N --dp N --zero N\n"
      "                                                --virtual-stages N]\n"
      "  without a layout: one consolidated folder (Hugging Face GPT2LMHeadModel loads it)");
  std::string what, from, to, layers;
  int tp = 0, pp = 1, dp = 1, zero = 0, virtual_stages = 1;
  opts.add_options()("help,h", "show this help")("what", po::value(&what), "convert")(
      "from", po::value(&from)->required(), "checkpoint folder to read (either kind)")(
      "to", po::value(&to)->required(), "folder to write (must not exist)")(
      "tp", po::value(&tp)->default_value(0), "tensor-parallel degree of the target layout")(
      "pp", po::value(&pp)->default_value(1), "pipeline stages of the target layout")(
      "dp", po::value(&dp)->default_value(1), "data-parallel degree of the target layout")(
      "zero", po::value(&zero)->default_value(0), "ZeRO stage recorded in the target layout")(
      "virtual-stages", po::value(&virtual_stages)->default_value(1),
      "layer chunks per pipeline rank (interleaved 1F1B)")(
      "layers-per-stage", po::value(&layers),
      "layers of each (virtual) stage, e.g. 3,3 (default: even)");
  po::variables_map vm;
  if (!parse_options(argc, argv, opts, vm, "what")) return 0;
  TS_CHECK(what == "convert", "unknown checkpoint action '", what,
           "': use 'tessera checkpoint convert'");
  const bool layout =
      tp > 0 || !vm["pp"].defaulted() || !vm["dp"].defaulted() || !vm["virtual-stages"].defaulted();
  if (!layout) {
    convert_checkpoint(from, to, nullptr);
    std::cout << "wrote " << to << " (consolidated)\n";
    return 0;
  }
  ShardLayout target{
      tp > 0 ? tp : 1, pp, dp, zero, layers.empty() ? std::vector<int64_t>{} : parse_counts(layers),
      virtual_stages};
  TS_CHECK(target.tp >= 1 && target.pp >= 1 && target.dp >= 1 && zero >= 0 && zero <= 3 &&
               virtual_stages >= 1,
           "--tp, --pp, --dp, --virtual-stages must be >= 1 and --zero in 0..3");
  convert_checkpoint(from, to, &target);
  std::cout << "wrote " << to << " (sharded, " << target.str() << ")\n";
  return 0;
}

}  // namespace tessera::launch
