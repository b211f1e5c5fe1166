// tessera bench train: times full training steps (forward, backward, AdamW) of a job's model on
// random tokens, the same work bench/pytorch_gpt2.py times for PyTorch; on CUDA it also reports
// MFU against the card's measured dense bf16 rate.
// tessera bench gemm: that rate, a large bf16 GEMM through cuBLASLt on random data.
#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>

#include "kernels/matmul.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "parallel/zero_optimizer.h"
#include "trainer/job_config.h"
#include "trainer/loss_scaler.h"
#include "trainer/train_loop.h"

namespace tessera::launch {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

// TFLOP/s of an (n × n) · (n × n) bf16 GEMM on CUDA device 0, bf16 out, fp32 accumulation, on
// random data (zeros run faster than real data), median of `reps` after 3 warm-ups.
double bf16_gemm_tflops(int64_t n, int reps) {
#ifdef TESSERA_WITH_CUDA
  TS_CHECK(cuda_available(), "tessera bench gemm needs a CUDA device");
  std::mt19937_64 rng(7);
  auto random_bf16 = [&] {
    Tensor host = Tensor::empty({n, n}, DType::bf16);
    bf16* p = host.data<bf16>();
    std::normal_distribution<float> normal;
    for (int64_t i = 0; i < host.numel(); ++i) p[i] = to_bf16(normal(rng));
    return host.to(Device::cuda(0));
  };
  const Tensor a = random_bf16(), b = random_bf16();
  Tensor c = Tensor::empty({n, n}, DType::bf16, Device::cuda(0));
  const cuda::GemmTypes types{DType::bf16, DType::bf16};
  std::vector<double> seconds;
  for (int i = 0; i < reps + 3; ++i) {
    device_synchronize(Device::cuda(0));
    const auto t0 = Clock::now();
    cuda::gemm(c.raw(), a.raw(), b.raw(), nullptr, n, n, n, false, false, 0.0f, nullptr, types);
    device_synchronize(Device::cuda(0));
    if (i >= 3) seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return 2.0 * n * n * n / seconds[seconds.size() / 2] / 1e12;
#else
  TS_THROW("tessera bench gemm needs a CUDA build: ", n, reps);
#endif
}

int cmd_bench(int argc, char** argv) {
  po::options_description opts("tessera bench train|gemm");
  std::string what, config;
  std::vector<std::string> sets;
  int64_t steps = 10, warmup = 2, threads = 0, size = 8192;
  double peak = 0;
  opts.add_options()("help,h", "show this help")("what", po::value(&what)->required(),
                                                 "what to time: train or gemm")(
      "size", po::value(&size)->default_value(8192), "gemm: n of the n x n x n product")(
      "peak-tflops", po::value(&peak)->default_value(0),
      "train on CUDA: the dense bf16 rate MFU is against (0: measure it with the gemm bench)")(
      "config,c", po::value(&config), "YAML job file (its model and train keys)")(
      "set,s", po::value(&sets)->composing(), "override a config key (repeatable)")(
      "steps", po::value(&steps)->default_value(10), "timed steps")(
      "warmup", po::value(&warmup)->default_value(2), "untimed steps first")(
      "threads", po::value(&threads)->default_value(0), "compute threads (0: the config's)");
  po::variables_map vm;
  if (!parse_options(argc, argv, opts, vm, "what")) return 0;
  TS_CHECK(what == "train" || what == "gemm", "unknown benchmark '", what,
           "': use 'tessera bench train' or 'tessera bench gemm'");
  TS_CHECK(steps > 0 && warmup >= 0, "--steps must be positive and --warmup >= 0");
  if (what == "gemm") {
    TS_CHECK(size > 0, "--size must be positive");
    const double tflops = bf16_gemm_tflops(size, static_cast<int>(steps));
    std::printf("tessera bench gemm: bf16 %lld^3 on cuda:0, %.1f TFLOP/s\n",
                static_cast<long long>(size), tflops);
    std::printf("{\"impl\":\"tessera\",\"bench\":\"gemm\",\"size\":%lld,\"tflops\":%.1f}\n",
                static_cast<long long>(size), tflops);
    return 0;
  }
  TS_CHECK(!config.empty(), "tessera bench train needs --config FILE");

  const JobConfig job = load_job_config(config, sets);
  TS_CHECK(!job.device.is_cuda() || cuda_available(), "device: ", job.device.str(), " in ", config,
           " but no CUDA device is visible (or this Tessera was built without CUDA); use --set "
           "device=cpu");
  set_compute_threads(threads > 0 ? threads : job.threads);
  const TrainConfig& tc = job.train;
  Gpt2 model(job.model, job.device);
  model.init_weights(job.seed);
  model.set_gemm_dtype(tc.gemm_dtype());
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
  LossScaler scaler(tc.precision == "fp16");  // as tessera train scales fp16 gradients
  auto step = [&] {
    const float dloss = static_cast<float>(scaler.scale() / static_cast<double>(tokens_per_step));
    for (int64_t m = 0; m < tc.grad_accum; ++m) {
      fill(inputs);
      fill(targets);
      model.forward(acts, inputs);
      model.backward(acts, targets, dloss);
    }
    scaler.update(std::isfinite(optimizer.step(tc.lr, {scaler.scale(), scaler.enabled()})));
  };
  for (int64_t i = 0; i < warmup; ++i) step();
  device_synchronize(job.device);
  const auto t0 = Clock::now();
  for (int64_t i = 0; i < steps; ++i) step();
  device_synchronize(job.device);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();

  const double tok_s = steps * tokens_per_step / secs;
  const double gflops = tok_s * job.model.train_flops_per_token(tc.seq_len) / 1e9;
  const int nthreads = omp_get_max_threads();
  std::printf("tessera bench train: %s, %lld params, B=%lld T=%lld, %s, %d threads\n",
              job.name.c_str(), static_cast<long long>(job.model.num_params()),
              static_cast<long long>(tc.batch_size), static_cast<long long>(tc.seq_len),
              tc.precision.c_str(), nthreads);
  std::printf("  %.1f ms/step, %.0f tokens/s, %.1f GFLOP/s\n", secs / steps * 1e3, tok_s, gflops);
  // MFU (PaLM's definition): model FLOPs per second over the card's dense bf16 rate.
  double mfu = 0;
  if (job.device.is_cuda()) {
    if (peak <= 0) peak = bf16_gemm_tflops(8192, 10);
    mfu = gflops / 1e3 / peak;
    std::printf("  %s: %.1f TFLOP/s of model FLOPs, MFU %.1f%% of %.1f TFLOP/s (dense bf16)\n",
                job.device.str().c_str(), gflops / 1e3, 100 * mfu, peak);
  }
  std::printf(
      "{\"impl\":\"tessera\",\"device\":\"%s\",\"precision\":\"%s\",\"threads\":%d,"
      "\"tokens_per_s\":%.1f,"
      "\"ms_per_step\":%.2f,\"gflops\":%.2f,\"mfu\":%.4f,\"peak_tflops\":%.1f,\"params\":%lld,"
      "\"recompute\":%s}\n",
      job.device.str().c_str(), tc.precision.c_str(), nthreads, tok_s, secs / steps * 1e3, gflops,
      mfu, peak, static_cast<long long>(job.model.num_params()), tc.recompute ? "true" : "false");
  return 0;
}

}  // namespace tessera::launch
