#include "trainer/train_loop.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "model/generate.h"
#include "parallel/zero_accounting.h"
#include "trainer/checkpoint.h"
#include "trainer/dataset.h"
#include "trainer/job_data.h"
#include "trainer/lr_schedule.h"
#include "trainer/model_state.h"
#include "trainer/pipeline_runner.h"
#include "trainer/sharded_checkpoint.h"

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

// Draws the next batch of `loader` into mb.
void next_batch(DataLoader& loader, MicroBatch& mb) {
  loader.next_batch(mb.inputs.data<int32_t>(), mb.targets.data<int32_t>());
}

// A loss known on the last pipeline stage (0 elsewhere), averaged over dp, on every rank.
double loss_everywhere(parallel::ParallelContext& ctx, double last_stage_loss) {
  const double x = all_reduce_scalar(ctx.pp(), last_stage_loss, parallel::ReduceOp::sum);
  return all_reduce_scalar(ctx.dp(), x, parallel::ReduceOp::avg);
}

// Mean validation loss over `batches` batches from the start of the split, on every rank.
double evaluate(PipelineRunner& runner, DataLoader& val, MicroBatch& mb, int64_t batches,
                parallel::ParallelContext& ctx) {
  val.reset();
  double sum = 0.0;
  for (int64_t i = 0; i < batches; ++i) {
    next_batch(val, mb);
    sum += runner.evaluate(mb);
  }
  return loss_everywhere(ctx, sum / static_cast<double>(batches));
}

}  // namespace

void set_compute_threads(int64_t threads) {
  if (threads <= 0) return;
  omp_set_num_threads(static_cast<int>(threads));
  openblas_set_num_threads(static_cast<int>(threads));
}

TrainSummary run_training(const JobConfig& job, Logger& log) {
  parallel::ParallelContext ctx = parallel::make_local_context();
  return run_training(job, log, ctx);
}

TrainSummary run_training(const JobConfig& job, Logger& log, parallel::ParallelContext& ctx) {
  set_compute_threads(job.threads);
  ctx.set_timeout(job.parallel.timeout_s);
  if (job.device.is_cuda()) {
    TS_CHECK(cuda_available(), "device: ", job.device.str(),
             " but no CUDA device is visible (or this Tessera was built without CUDA: the README "
             "says how CUDA is found); use device: cpu");
    TS_CHECK(ctx.world().size() == 1,
             "device: cuda trains in one process so far: multi-GPU "
             "training over NCCL is not wired into `tessera train` yet; run without mpirun or "
             "use device: cpu");
  }
  const bool writer = ctx.world_rank() == 0;
  parallel::Communicator& dp = ctx.dp();
  const TrainConfig& tc = job.train;
  TS_CHECK(tc.batch_size % dp.size() == 0, "train.batch_size (", tc.batch_size,
           ") must be a multiple of the data-parallel degree (", dp.size(), " = ", ctx.grid().str(),
           "): each data-parallel rank takes an equal share of a micro-batch");
  const int64_t local_batch = tc.batch_size / dp.size();

  // Rank 0 builds the tokenizer and shards if needed; the others wait, then read them.
  JobData data;
  if (writer) data = prepare_job_data(job, log);
  ctx.world().barrier();
  if (!writer) data = prepare_job_data(job, log);
  const Tokenizer tokenizer = Tokenizer::load(data.tokenizer_path);

  DataLoader train_loader(read_token_shard(data.train_path), local_batch, tc.seq_len, job.seed,
                          /*shuffle=*/true, dp.rank(), dp.size());
  const int64_t val_batches = job.eval.batches;
  DataLoader val_loader(read_token_shard(data.val_path), local_batch, tc.seq_len, job.seed,
                        /*shuffle=*/false, dp.rank(), dp.size());

  const int stage = ctx.coord().pp, stages = ctx.grid().pp();
  Gpt2 model(job.model, job.device,
             {dp.size(), &ctx.tp(), stage, stages, job.parallel.layers_per_stage,
              job.parallel.sequence_parallel, static_cast<int>(job.parallel.virtual_stages)});
  model.init_weights(job.seed);
  model.set_gemm_dtype(tc.gemm_dtype());
  const LrSchedule schedule{tc.lr, tc.min_lr, tc.warmup_steps, tc.steps};
  const std::string ckpt_root = job.checkpoint.dir + "/checkpoints";

  TrainSummary summary;
  std::string resume_from;
  if (job.checkpoint.resume == "auto") {
    resume_from = latest_checkpoint(ckpt_root);
  } else if (job.checkpoint.resume != "none") {
    resume_from = job.checkpoint.resume;
  }
  OptimizerState loaded;
  LossScaleState loss_scale;
  if (!resume_from.empty()) {
    // Either kind of checkpoint, saved under any layout: this rank reads its part.
    const TrainerState st = load_any_checkpoint(resume_from, model, &loaded);
    train_loader.restore(st.loader);
    summary.first_step = st.step;
    loss_scale = st.loss_scale;
    log.info("resumed from " + resume_from + " at step " + std::to_string(st.step));
  }
  // Takes its shards of the (initial or loaded) weights; at ZeRO-3 the full units go.
  parallel::DistributedAdamW optimizer(model.params(), dp, static_cast<int>(job.parallel.zero),
                                       {tc.beta1, tc.beta2, tc.eps, tc.weight_decay, tc.grad_clip},
                                       &ctx.tp(), &ctx.pp());
  if (stages > 1 && model.is_first_stage())
    optimizer.tie_unit(model.wte_unit(), ctx.embedding(), true);
  if (stages > 1 && model.is_last_stage())
    optimizer.tie_unit(model.head_unit(), ctx.embedding(), false);
  if (!resume_from.empty()) {
    optimizer.load_moments(loaded.exp_avg, loaded.exp_avg_sq);
    optimizer.set_steps_taken(loaded.steps);
    loaded = OptimizerState{};
  }
  model.set_hooks(&optimizer);

  const int64_t params = model.config().num_params();
  const int64_t tokens_per_step = tc.batch_size * tc.seq_len * tc.grad_accum;
  log.info("model: " + std::to_string(params) + " parameters, " + std::to_string(tokens_per_step) +
           " tokens per step, " + std::to_string(train_loader.batches_per_epoch()) +
           " batches per epoch");

  log.info("layout " + ctx.grid().str() + ", ZeRO stage " + std::to_string(job.parallel.zero) +
           ", " + std::to_string(local_batch) + " sequences per rank and micro-batch" +
           (stages > 1 ? ", pipeline schedule " + job.parallel.schedule : "") +
           (job.parallel.virtual_stages > 1
                ? " interleaved over " + std::to_string(job.parallel.virtual_stages) +
                      " virtual stages per rank"
                : ""));
  PipelineRunner runner(model, optimizer, ctx.pp(),
                        parallel::parse_pipeline_schedule(job.parallel.schedule),
                        static_cast<int>(tc.grad_accum), local_batch, tc.seq_len, tc.recompute);
  std::vector<MicroBatch> batches;
  for (int64_t m = 0; m < tc.grad_accum; ++m) batches.emplace_back(local_batch, tc.seq_len);
  MicroBatch val_batch(local_batch, tc.seq_len);
  LossScaler scaler(tc.precision == "fp16", loss_scale);
  TrainerState state{summary.first_step, train_loader.state(), 0.0, scaler.state()};
  const bool sharded = job.checkpoint.format == "sharded" ||
                       (job.checkpoint.format == "auto" && ctx.world().size() > 1);
  const ShardLayout layout{ctx.grid().tp(),
                           stages,
                           dp.size(),
                           static_cast<int>(job.parallel.zero),
                           job.parallel.layers_per_stage,
                           static_cast<int>(job.parallel.virtual_stages)};
  double tp_wire = 0, pp_wire = 0;  // bytes this rank sent in its tp and pp groups, last step
  double step_seconds_ema = 0.0;
  const auto run_start = Clock::now();

  for (int64_t step = summary.first_step; step < tc.steps; ++step) {
    const auto t0 = Clock::now();
    const double lr = schedule.at(step);
    for (parallel::Communicator* c : {&ctx.dp(), &ctx.tp(), &ctx.pp()}) c->reset_stats();
    for (MicroBatch& mb : batches) next_batch(train_loader, mb);
    // ∂L/∂loss_i for a mean over the step's tokens, times the fp16 loss scale.
    const float dloss = static_cast<float>(scaler.scale() / static_cast<double>(tokens_per_step));
    const double loss = loss_everywhere(
        ctx, runner.train_step(batches, dloss) / static_cast<double>(tc.grad_accum));
    TS_CHECK(std::isfinite(loss), "training loss is ", loss, " at step ", step + 1,
             ": lower train.lr or raise train.warmup_steps");
    const double scale = scaler.scale();
    const double norm = optimizer.step(lr, {scale, scaler.enabled()});
    if (!scaler.update(std::isfinite(norm)))
      log.warn("step " + std::to_string(step + 1) + ": fp16 gradients overflowed at loss scale " +
               std::to_string(scale) + "; update skipped, scale now " +
               std::to_string(scaler.scale()));
    summary.step_traffic = dp.stats();
    summary.state_bytes = optimizer.state_bytes();  // before evaluation gathers anything
    tp_wire = ctx.tp().stats().total_wire_bytes();
    pp_wire = ctx.pp().stats().total_wire_bytes();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    step_seconds_ema = step == summary.first_step ? secs : 0.9 * step_seconds_ema + 0.1 * secs;
    summary.train_losses.push_back(loss);
    state = {step + 1, train_loader.state(), loss, scaler.state()};

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
      const double val = evaluate(runner, val_loader, val_batch, val_batches, ctx);
      summary.val_losses.emplace_back(step + 1, val);
      char line[96];
      std::snprintf(line, sizeof(line), "step %5lld | val loss %.4f",
                    static_cast<long long>(step + 1), val);
      log.info(line);
    }
    if ((job.checkpoint.every > 0 && (step + 1) % job.checkpoint.every == 0) || last) {
      if (sharded) {
        summary.checkpoint =
            save_sharded_checkpoint(ckpt_root, model, optimizer, ctx, layout, state,
                                    data.tokenizer_path, job.checkpoint.keep);
      } else {
        // The whole model's state is gathered to every rank; rank 0 writes it.
        std::unique_ptr<Gpt2> whole = writer ? std::make_unique<Gpt2>(job.model) : nullptr;
        OptimizerState whole_opt;
        gather_model_state(model, optimizer, ctx.tp(), ctx.pp(), /*with_moments=*/true, whole.get(),
                           writer ? &whole_opt : nullptr);
        if (writer)
          summary.checkpoint = save_checkpoint(ckpt_root, *whole, &whole_opt, state,
                                               data.tokenizer_path, job.checkpoint.keep);
      }
      log.info("checkpoint: " + summary.checkpoint);
    }
  }
  const double total = std::chrono::duration<double>(Clock::now() - run_start).count();
  const int64_t steps_run = static_cast<int64_t>(summary.train_losses.size());
  if (steps_run > 0) summary.tokens_per_second = steps_run * tokens_per_step / total;

  if (ctx.world().size() > 1) {
    const auto accounts = parallel::gather_accounts(
        ctx.world(), {summary.state_bytes, summary.step_traffic,
                      static_cast<double>(model.params().count()), tp_wire, pp_wire});
    log.info("model state and data-parallel traffic per rank (last step):\n" +
             parallel::accounting_table(accounts, static_cast<int>(job.parallel.zero), dp.size(),
                                        static_cast<int>(tc.grad_accum)));
  }

  if (job.sample.tokens > 0) {
    // Sampling runs on rank 0 alone, on the whole model.
    std::unique_ptr<Gpt2> whole = writer ? std::make_unique<Gpt2>(job.model) : nullptr;
    gather_model_state(model, optimizer, ctx.tp(), ctx.pp(), /*with_moments=*/false, whole.get(),
                       nullptr);
    if (writer) {
      std::vector<int32_t> prompt = tokenizer.encode(job.sample.prompt);
      prompt.insert(prompt.begin(), tokenizer.eot_id());
      const SamplingConfig sampling{job.sample.temperature, job.sample.top_k, job.seed};
      std::vector<int32_t> out =
          generate(*whole, prompt, job.sample.tokens, sampling, tokenizer.eot_id());
      out.erase(out.begin());  // the leading <|endoftext|>
      if (!out.empty() && out.back() == tokenizer.eot_id()) out.pop_back();
      summary.sample = tokenizer.decode(out);
    }
  }
  return summary;
}

}  // namespace tessera
