// A training job as typed structs, parsed and validated from a YAML job file
// (configs/*.yaml; every key is documented in docs/config.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/device.h"
#include "model/gpt2.h"

namespace tessera {

struct DataConfig {
  std::string corpus = "brown";           // the only corpus for now
  std::string corpus_dir = "data/brown";  // where scripts/fetch_corpus.sh unpacks it
  std::string dir = "data/tiny";          // tokenizer.json, train.bin, val.bin
  double val_fraction = 0.05;
};

struct TrainConfig {
  int64_t batch_size = 8;  // sequences per micro-batch over all data-parallel ranks together
  int64_t seq_len = 256;
  int64_t grad_accum = 1;
  int64_t steps = 600;
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 50;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // <= 0 disables clipping
  bool recompute = false;  // activation recomputation
  // fp32, or bf16 / fp16: GEMM operands rounded to that type on CUDA (fp32 accumulation; master
  // weights, optimizer state, activations and gradients fp32); fp16 adds dynamic loss scaling.
  std::string precision = "fp32";
  DType gemm_dtype() const {
    return precision == "bf16" ? DType::bf16 : precision == "fp16" ? DType::f16 : DType::f32;
  }
  int64_t log_every = 1;
};

struct EvalConfig {
  int64_t every = 100;  // steps between validation runs; 0 disables
  int64_t batches = 8;  // validation batches per run (from the start of the split)
};

struct CheckpointConfig {
  std::string dir = "runs/tiny";  // checkpoints land in <dir>/checkpoints/step_NNNNNN
  int64_t every = 200;            // 0 saves only at the end
  int64_t keep = 2;               // most recent checkpoints kept
  std::string resume = "auto";    // auto (latest if any), none, or a checkpoint folder
  std::string format = "auto";    // consolidated, sharded, or auto (sharded on several ranks)
};

struct SampleConfig {
  std::string prompt = "The";
  int64_t tokens = 64;
  double temperature = 0.8;
  int64_t top_k = 40;
};

// The 3D layout (docs/parallel.md): world = tp × pp × dp ranks, Megatron order.
struct ParallelConfig {
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 0;                         // 0: world size / (tp · pp)
  int64_t zero = 0;                       // ZeRO stage 0-3 over the data-parallel group
  std::string schedule = "1f1b";          // pipeline schedule: 1f1b or gpipe
  int64_t virtual_stages = 1;             // layer chunks per pp rank: > 1 is interleaved 1F1B
  std::vector<int64_t> layers_per_stage;  // per virtual stage; empty: an even split
  bool sequence_parallel = false;  // split the B·T rows over tp outside the parallel regions
  double timeout_s = 300;          // a collective that waits longer fails, naming the missing ranks
};

struct JobConfig {
  std::string path;  // the YAML file it came from
  std::string name = "tiny";
  uint64_t seed = 1337;
  Device device = Device::cpu();
  int64_t threads = 0;  // 0: OMP_NUM_THREADS or all cores
  Gpt2Config model;
  DataConfig data;
  TrainConfig train;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  SampleConfig sample;
  ParallelConfig parallel;
};

// Parses `path` with "a.b=value" overrides applied first. Throws Error naming the file, the line
// and the key for a missing file, a YAML syntax error, an unknown key, a wrong type or a value
// out of range.
JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from YAML text (tests); `name` stands in for the file name in messages.
JobConfig parse_job_config(const std::string& yaml, const std::string& name,
                           const std::vector<std::string>& overrides = {});

}  // namespace tessera
