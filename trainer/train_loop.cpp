#include "trainer/train_loop.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "model/generate.h"
#include "trainer/checkpoint.h"
#include "trainer/dataset.h"
#include "trainer/job_data.h"
#include "trainer/lr_schedule.h"
#include "trainer/optimizer.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  else
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return buf;
}

// One (B, T) batch of inputs and targets as i32 tensors.
struct Batch {
  Tensor inputs, targets;
  Batch(int64_t b, int64_t t)
      : inputs(Tensor::empty({b, t}, DType::i32)), targets(Tensor::empty({b, t}, DType::i32)) {}
  void next(DataLoader& loader) { loader.next_batch(inputs.data<int32_t>(), targets.data<int32_t>()); }
};

double evaluate(const Gpt2& model, Gpt2Activations& acts, DataLoader& val, Batch& batch,
                int64_t batches) {
  val.reset();
  double sum = 0.0;
  for (int64_t i = 0; i < batches; ++i) {
    batch.next(val);
    model.forward(acts, batch.inputs);
    sum += model.loss(acts, batch.targets);
  }
  return sum / static_cast<double>(batches);
}

}  // namespace

void set_compute_threads(int64_t threads) {
  if (threads <= 0) return;
  omp_set_num_threads(static_cast<int>(threads));
  openblas_set_num_threads(static_cast<int>(threads));
}

TrainSummary run_training(const JobConfig& job, Logger& log) {
  set_compute_threads(job.threads);
  const JobData data = prepare_job_data(job, log);
  const Tokenizer tokenizer = Tokenizer::load(data.tokenizer_path);
  const TrainConfig& tc = job.train;

  DataLoader train_loader(read_token_shard(data.train_path), tc.batch_size, tc.seq_len, job.seed,
                          /*shuffle=*/true);
  const int64_t val_batches = job.eval.batches;
  DataLoader val_loader(read_token_shard(data.val_path), tc.batch_size, tc.seq_len, job.seed,
                        /*shuffle=*/false);

  Gpt2 model(job.model, job.device);
  model.init_weights(job.seed);
  AdamW optimizer(model.params(), {tc.beta1, tc.beta2, tc.eps, tc.weight_decay, tc.grad_clip});
  const LrSchedule schedule{tc.lr, tc.min_lr, tc.warmup_steps, tc.steps};
  const std::string ckpt_root = job.checkpoint.dir + "/checkpoints";

  TrainSummary summary;
  std::string resume_from;
  if (job.checkpoint.resume == "auto") {
    resume_from = latest_checkpoint(ckpt_root);
  } else if (job.checkpoint.resume != "none") {
    resume_from = job.checkpoint.resume;
  }
  if (!resume_from.empty()) {
    const TrainerState st = load_checkpoint(resume_from, model, &optimizer);
    train_loader.restore(st.loader);
    summary.first_step = st.step;
    log.info("resumed from " + resume_from + " at step " + std::to_string(st.step));
  }

  const int64_t params = model.config().num_params();
  const int64_t tokens_per_step = tc.batch_size * tc.seq_len * tc.grad_accum;
  log.info("model: " + std::to_string(params) + " parameters, " +
           std::to_string(tokens_per_step) + " tokens per step, " +
           std::to_string(train_loader.batches_per_epoch()) + " batches per epoch");

  Gpt2Activations acts = model.make_activations(tc.batch_size, tc.seq_len, tc.recompute);
  Batch batch(tc.batch_size, tc.seq_len);
  const float dloss = 1.0f / static_cast<float>(tokens_per_step);
  TrainerState state{summary.first_step, train_loader.state(), 0.0};
  double step_seconds_ema = 0.0;
  const auto run_start = Clock::now();

  for (int64_t step = summary.first_step; step < tc.steps; ++step) {
    const auto t0 = Clock::now();
    const double lr = schedule.at(step);
    double loss = 0.0;
    for (int64_t micro = 0; micro < tc.grad_accum; ++micro) {
      batch.next(train_loader);
      model.forward(acts, batch.inputs);
      loss += model.backward(acts, batch.targets, dloss);
    }
    loss /= static_cast<double>(tc.grad_accum);
    TS_CHECK(std::isfinite(loss), "training loss is ", loss, " at step ", step + 1,
             ": lower train.lr or raise train.warmup_steps");
    const double norm = optimizer.step(model.params(), lr);
    model.params().zero_grads();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    step_seconds_ema = step == summary.first_step ? secs : 0.9 * step_seconds_ema + 0.1 * secs;
    summary.train_losses.push_back(loss);
    state = {step + 1, train_loader.state(), loss};

    if ((step + 1) % tc.log_every == 0 || step + 1 == tc.steps) {
      char line[256];
      std::snprintf(line, sizeof(line),
                    "step %5lld/%lld | loss %.4f | lr %.3e | norm %.3f | %6.0f tok/s | %4.0f ms | "
                    "ETA %s",
                    static_cast<long long>(step + 1), static_cast<long long>(tc.steps), loss, lr,
                    norm, tokens_per_step / secs, secs * 1e3,
                    format_duration(step_seconds_ema * (tc.steps - step - 1)).c_str());
      log.info(line);
    }
    const bool last = step + 1 == tc.steps;
    if (job.eval.every > 0 && ((step + 1) % job.eval.every == 0 || last)) {
      const double val = evaluate(model, acts, val_loader, batch, val_batches);
      summary.val_losses.emplace_back(step + 1, val);
      char line[96];
      std::snprintf(line, sizeof(line), "step %5lld | val loss %.4f", static_cast<long long>(step + 1),
                    val);
      log.info(line);
    }
    if ((job.checkpoint.every > 0 && (step + 1) % job.checkpoint.every == 0) || last) {
      summary.checkpoint = save_checkpoint(ckpt_root, model, &optimizer, state,
                                           data.tokenizer_path, job.checkpoint.keep);
      log.info("checkpoint: " + summary.checkpoint);
    }
  }
  const double total = std::chrono::duration<double>(Clock::now() - run_start).count();
  const int64_t steps_run = static_cast<int64_t>(summary.train_losses.size());
  if (steps_run > 0) summary.tokens_per_second = steps_run * tokens_per_step / total;

  if (job.sample.tokens > 0) {
    std::vector<int32_t> prompt = tokenizer.encode(job.sample.prompt);
    prompt.insert(prompt.begin(), tokenizer.eot_id());
    const SamplingConfig sampling{job.sample.temperature, job.sample.top_k, job.seed};
    std::vector<int32_t> out =
        generate(model, prompt, job.sample.tokens, sampling, tokenizer.eot_id());
    out.erase(out.begin());  // the leading <|endoftext|>
    if (!out.empty() && out.back() == tokenizer.eot_id()) out.pop_back();
    summary.sample = tokenizer.decode(out);
  }
  return summary;
}

}  // namespace tessera
