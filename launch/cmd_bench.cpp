// tessera bench train: times full training steps (forward, backward, AdamW) of a job's model on
// random tokens, the same work bench/pytorch_gpt2.py times for PyTorch.
#include <omp.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>

#include "launch/commands.h"
#include "parallel/zero_optimizer.h"
#include "trainer/job_config.h"
#include "trainer/train_loop.h"

namespace tessera::launch {

namespace po = boost::program_options;

int cmd_bench(int argc, char** argv) {
  po::options_description opts("tessera bench train");
  std::string what, config;
  std::vector<std::string> sets;
  int64_t steps = 10, warmup = 2, threads = 0;
  opts.add_options()("help,h", "show this help")("what", po::value(&what)->required(),
                                                 "what to time: train")(
      "config,c", po::value(&config)->required(), "YAML job file (its model and train keys)")(
      "set,s", po::value(&sets)->composing(), "override a config key (repeatable)")(
      "steps", po::value(&steps)->default_value(10), "timed steps")(
      "warmup", po::value(&warmup)->default_value(2), "untimed steps first")(
      "threads", po::value(&threads)->default_value(0), "compute threads (0: the config's)");
  po::positional_options_description pos;
  pos.add("what", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  po::notify(vm);
  TS_CHECK(what == "train", "unknown benchmark '", what, "': use 'tessera bench train'");
  TS_CHECK(steps > 0 && warmup >= 0, "--steps must be positive and --warmup >= 0");

  const JobConfig job = load_job_config(config, sets);
  set_compute_threads(threads > 0 ? threads : job.threads);
  const TrainConfig& tc = job.train;
  Gpt2 model(job.model, job.device);
  model.init_weights(job.seed);
  parallel::LocalCommunicator dp("dp");  // one process: ZeRO stage 0 over a group of one
  parallel::DistributedAdamW optimizer(model.params(), dp, /*stage=*/0,
                                       {tc.beta1, tc.beta2, tc.eps, tc.weight_decay, tc.grad_clip});
  Gpt2Activations acts = model.make_activations(tc.batch_size, tc.seq_len, tc.recompute);

  Tensor inputs = Tensor::empty({tc.batch_size, tc.seq_len}, DType::i32);
  Tensor targets = Tensor::empty({tc.batch_size, tc.seq_len}, DType::i32);
  std::mt19937_64 rng(job.seed);
  auto fill = [&](Tensor& t) {
    int32_t* p = t.data<int32_t>();
    for (int64_t i = 0; i < t.numel(); ++i)
      p[i] = static_cast<int32_t>(rng() % job.model.vocab_size);
  };
  const int64_t tokens_per_step = tc.batch_size * tc.seq_len * tc.grad_accum;
  const float dloss = 1.0f / static_cast<float>(tokens_per_step);
  auto step = [&] {
    for (int64_t m = 0; m < tc.grad_accum; ++m) {
      fill(inputs);
      fill(targets);
      model.forward(acts, inputs);
      model.backward(acts, targets, dloss);
    }
    optimizer.step(tc.lr);
  };
  for (int64_t i = 0; i < warmup; ++i) step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const double tok_s = steps * tokens_per_step / secs;
  const double gflops = tok_s * job.model.train_flops_per_token(tc.seq_len) / 1e9;
  const int nthreads = omp_get_max_threads();
  std::printf("tessera bench train: %s, %lld params, B=%lld T=%lld, %d threads\n", job.name.c_str(),
              static_cast<long long>(job.model.num_params()), static_cast<long long>(tc.batch_size),
              static_cast<long long>(tc.seq_len), nthreads);
  std::printf("  %.1f ms/step, %.0f tokens/s, %.1f GFLOP/s\n", secs / steps * 1e3, tok_s, gflops);
  std::printf(
      "{\"impl\":\"tessera\",\"threads\":%d,\"tokens_per_s\":%.1f,\"ms_per_step\":%.2f,"
      "\"gflops\":%.2f,\"params\":%lld,\"recompute\":%s}\n",
      nthreads, tok_s, secs / steps * 1e3, gflops, static_cast<long long>(job.model.num_params()),
      tc.recompute ? "true" : "false");
  return 0;
}

}  // namespace tessera::launch
