#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>

#include "core/safetensors.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "model/generate.h"
#include "trainer/checkpoint.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/tokenizer.h"
#include "trainer/train_loop.h"

namespace tessera::launch {

namespace po = boost::program_options;

int cmd_generate(int argc, char** argv) {
  po::options_description opts("tessera generate");
  std::string checkpoint, prompt, logits_out;
  int64_t tokens = 64, top_k = 40, threads = 0;
  double temperature = 0.8;
  uint64_t seed = 0;
  opts.add_options()("help,h", "show this help")(
      "checkpoint", po::value(&checkpoint)->required(),
      "checkpoint folder (runs/tiny/checkpoints/step_NNNNNN) or a run's checkpoints/ folder")(
      "prompt", po::value(&prompt)->default_value("The"), "text to continue")(
      "tokens", po::value(&tokens)->default_value(64), "tokens to generate")(
      "temperature", po::value(&temperature)->default_value(0.8), "0 is greedy")(
      "top_k", po::value(&top_k)->default_value(40), "0 keeps the whole vocabulary")(
      "seed", po::value(&seed)->default_value(0), "sampling seed")(
      "threads", po::value(&threads)->default_value(0), "compute threads (0: default)")(
      "logits-out", po::value(&logits_out),
      "also write the prompt's token ids and logits (T, V) to this safetensors file, the prompt "
      "in its metadata (bench/hf_export_check.py compares them with transformers')");
  po::variables_map vm;
  if (!parse_options(argc, argv, opts, vm)) return 0;
  set_compute_threads(threads);

  std::string dir = checkpoint;
  if (!holds_weights(dir)) {
    dir = latest_checkpoint(checkpoint);
    TS_CHECK(!dir.empty(), "no checkpoint in '", checkpoint,
             "': pass a step_NNNNNN folder or a run's checkpoints/ folder");
  }
  const Tokenizer tok = Tokenizer::load((std::filesystem::path(dir) / "tokenizer.json").string());
  Gpt2 model(read_checkpoint_model_config(dir));
  load_any_checkpoint(dir, model, nullptr);  // consolidated or sharded, any layout
  std::vector<int32_t> ids = tok.encode(prompt);
  ids.insert(ids.begin(), tok.eot_id());
  if (!logits_out.empty()) {
    const int64_t t = static_cast<int64_t>(ids.size());
    TS_CHECK(t <= model.config().max_seq_len, "--logits-out: the prompt is ", t,
             " tokens, longer than model.max_seq_len = ", model.config().max_seq_len);
    Tensor tokens_t = Tensor::empty({1, t}, DType::i32);
    std::copy(ids.begin(), ids.end(), tokens_t.data<int32_t>());
    Gpt2Activations acts = model.make_activations(1, t, /*recompute=*/true);
    model.forward(acts, tokens_t);
    Tensor logits = Tensor::empty({t, model.config().vocab_size}, DType::f32);
    model.logits(logits, acts, /*last_only=*/false);
    save_safetensors(logits_out, {{"tokens", tokens_t.view({t})}, {"logits", logits}},
                     {{"prompt", prompt}, {"checkpoint", dir}});
  }
  std::vector<int32_t> out = generate(model, ids, tokens, {temperature, top_k, seed}, tok.eot_id());
  out.erase(out.begin());
  if (!out.empty() && out.back() == tok.eot_id()) out.pop_back();
  std::cout << tok.decode(out) << "\n";
  return 0;
}

}  // namespace tessera::launch
