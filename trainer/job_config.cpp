#include "trainer/job_config.h"

#include "core/config.h"

namespace tessera {
namespace {

void read_model(const ConfigNode& n, Gpt2Config& m) {
  m.n_layer = n.get<int64_t>("n_layer", m.n_layer);
  n.require(m.n_layer > 0, "n_layer", "must be positive");
  m.n_head = n.get<int64_t>("n_head", m.n_head);
  n.require(m.n_head > 0, "n_head", "must be positive");
  m.d_model = n.get<int64_t>("d_model", m.d_model);
  n.require(m.d_model > 0 && m.d_model % m.n_head == 0, "d_model",
            "must be a positive multiple of model.n_head (" + std::to_string(m.n_head) + ")");
  m.vocab_size = n.get<int64_t>("vocab_size", m.vocab_size);
  n.require(m.vocab_size >= 257 && m.vocab_size <= 65536, "vocab_size",
            "must be in [257, 65536]: 256 byte tokens + <|endoftext|>, ids stored as uint16");
  m.max_seq_len = n.get<int64_t>("max_seq_len", m.max_seq_len);
  n.require(m.max_seq_len > 0, "max_seq_len", "must be positive");
}

void read_data(const ConfigNode& n, DataConfig& d) {
  d.corpus = n.get<std::string>("corpus", d.corpus);
  n.require(d.corpus == "brown", "corpus", "must be 'brown' (the only corpus Tessera ships)");
  d.corpus_dir = n.get<std::string>("corpus_dir", d.corpus_dir);
  d.dir = n.get<std::string>("dir", d.dir);
  d.val_fraction = n.get<double>("val_fraction", d.val_fraction);
  n.require(d.val_fraction > 0.0 && d.val_fraction < 0.5, "val_fraction", "must be in (0, 0.5)");
}

void read_train(const ConfigNode& n, TrainConfig& t, const Gpt2Config& m) {
  t.batch_size = n.get<int64_t>("batch_size", t.batch_size);
  n.require(t.batch_size > 0, "batch_size", "must be positive");
  t.seq_len = n.get<int64_t>("seq_len", t.seq_len);
  n.require(t.seq_len > 0 && t.seq_len <= m.max_seq_len, "seq_len",
            "must be in [1, model.max_seq_len = " + std::to_string(m.max_seq_len) + "]");
  t.grad_accum = n.get<int64_t>("grad_accum", t.grad_accum);
  n.require(t.grad_accum > 0, "grad_accum", "must be positive");
  t.steps = n.get<int64_t>("steps", t.steps);
  n.require(t.steps > 0, "steps", "must be positive");
  t.lr = n.get<double>("lr", t.lr);
  n.require(t.lr > 0.0 && t.lr < 1.0, "lr", "must be in (0, 1)");
  t.min_lr = n.get<double>("min_lr", t.min_lr);
  n.require(t.min_lr >= 0.0 && t.min_lr <= t.lr, "min_lr", "must be in [0, train.lr]");
  t.warmup_steps = n.get<int64_t>("warmup_steps", t.warmup_steps);
  n.require(t.warmup_steps >= 0 && t.warmup_steps <= t.steps, "warmup_steps",
            "must be in [0, train.steps]");
  t.weight_decay = n.get<double>("weight_decay", t.weight_decay);
  n.require(t.weight_decay >= 0.0, "weight_decay", "must be >= 0");
  t.beta1 = n.get<double>("beta1", t.beta1);
  n.require(t.beta1 >= 0.0 && t.beta1 < 1.0, "beta1", "must be in [0, 1)");
  t.beta2 = n.get<double>("beta2", t.beta2);
  n.require(t.beta2 >= 0.0 && t.beta2 < 1.0, "beta2", "must be in [0, 1)");
  t.eps = n.get<double>("eps", t.eps);
  n.require(t.eps > 0.0, "eps", "must be positive");
  t.grad_clip = n.get<double>("grad_clip", t.grad_clip);
  t.recompute = n.get<bool>("recompute", t.recompute);
  t.precision = n.get<std::string>("precision", t.precision);
  n.require(t.precision == "fp32" || t.precision == "bf16" || t.precision == "fp16", "precision",
            "must be 'fp32', 'bf16' or 'fp16' (16-bit GEMMs on CUDA)");
  t.log_every = n.get<int64_t>("log_every", t.log_every);
  n.require(t.log_every > 0, "log_every", "must be positive");
}

void read_eval(const ConfigNode& n, EvalConfig& e) {
  e.every = n.get<int64_t>("every", e.every);
  n.require(e.every >= 0, "every", "must be >= 0 (0 disables validation)");
  e.batches = n.get<int64_t>("batches", e.batches);
  n.require(e.batches > 0, "batches", "must be positive");
}

void read_checkpoint(const ConfigNode& n, CheckpointConfig& c) {
  c.dir = n.get<std::string>("dir", c.dir);
  c.every = n.get<int64_t>("every", c.every);
  n.require(c.every >= 0, "every", "must be >= 0 (0 saves only at the end)");
  c.keep = n.get<int64_t>("keep", c.keep);
  n.require(c.keep > 0, "keep", "must be positive");
  c.resume = n.get<std::string>("resume", c.resume);
  c.format = n.get<std::string>("format", c.format);
  n.require(c.format == "auto" || c.format == "consolidated" || c.format == "sharded", "format",
            "must be 'auto', 'consolidated' or 'sharded'");
}

void read_sample(const ConfigNode& n, SampleConfig& s) {
  s.prompt = n.get<std::string>("prompt", s.prompt);
  s.tokens = n.get<int64_t>("tokens", s.tokens);
  n.require(s.tokens >= 0, "tokens", "must be >= 0");
  s.temperature = n.get<double>("temperature", s.temperature);
  n.require(s.temperature >= 0.0, "temperature", "must be >= 0 (0 is greedy)");
  s.top_k = n.get<int64_t>("top_k", s.top_k);
  n.require(s.top_k >= 0, "top_k", "must be >= 0 (0 keeps the whole vocabulary)");
}

void read_parallel(const ConfigNode& n, ParallelConfig& p, const TrainConfig& t) {
  p.tp = n.get<int64_t>("tp", p.tp);
  n.require(p.tp >= 1, "tp", "must be >= 1");
  p.pp = n.get<int64_t>("pp", p.pp);
  n.require(p.pp >= 1, "pp", "must be >= 1");
  p.dp = n.get<int64_t>("dp", p.dp);
  n.require(p.dp >= 0, "dp", "must be >= 0 (0: world size / (tp * pp))");
  p.zero = n.get<int64_t>("zero", p.zero);
  n.require(p.zero >= 0 && p.zero <= 3, "zero", "must be 0, 1, 2 or 3 (the ZeRO stage)");
  p.schedule = n.get<std::string>("schedule", p.schedule);
  n.require(p.schedule == "1f1b" || p.schedule == "gpipe", "schedule", "must be '1f1b' or 'gpipe'");
  p.virtual_stages = n.get<int64_t>("virtual_stages", p.virtual_stages);
  n.require(p.virtual_stages >= 1, "virtual_stages", "must be >= 1 (layer chunks per rank)");
  if (p.virtual_stages > 1) {
    n.require(p.pp > 1, "virtual_stages", "needs parallel.pp > 1 (it interleaves pipeline stages)");
    n.require(p.schedule == "1f1b", "virtual_stages",
              "needs parallel.schedule '1f1b' (interleaving is a 1F1B schedule)");
    n.require(t.grad_accum % p.pp == 0, "virtual_stages",
              "needs train.grad_accum (the micro-batches per step) to be a multiple of "
              "parallel.pp: interleaving runs micro-batches in groups of pp");
  }
  p.layers_per_stage = n.get<std::vector<int64_t>>("layers_per_stage", p.layers_per_stage);
  n.require(p.layers_per_stage.empty() ||
                static_cast<int64_t>(p.layers_per_stage.size()) == p.pp * p.virtual_stages,
            "layers_per_stage",
            "must list one layer count per pipeline stage (parallel.pp x parallel.virtual_stages, "
            "virtual stage k·pp + s being chunk k of stage s)");
  p.sequence_parallel = n.get<bool>("sequence_parallel", p.sequence_parallel);
  p.timeout_s = n.get<double>("timeout_s", p.timeout_s);
  n.require(p.timeout_s > 0.0, "timeout_s", "must be positive (seconds)");
}

JobConfig read(ConfigNode& root, const std::vector<std::string>& overrides) {
  for (const std::string& o : overrides) root.apply_override(o);
  JobConfig job;
  job.path = root.file();
  job.name = root.get<std::string>("name", job.name);
  job.seed = static_cast<uint64_t>(root.get<int64_t>("seed", static_cast<int64_t>(job.seed)));
  const std::string device = root.get<std::string>("device", "cpu");
  root.require(device == "cpu" || device == "cuda" || device.rfind("cuda:", 0) == 0, "device",
               "must be 'cpu', 'cuda' or 'cuda:N'");
  job.device = parse_device(device);
  job.threads = root.get<int64_t>("threads", job.threads);
  root.require(job.threads >= 0, "threads", "must be >= 0 (0 uses OMP_NUM_THREADS or all cores)");
  read_model(root.child("model"), job.model);
  read_data(root.child("data"), job.data);
  read_train(root.child("train"), job.train, job.model);
  read_eval(root.child("eval"), job.eval);
  read_checkpoint(root.child("checkpoint"), job.checkpoint);
  read_sample(root.child("sample"), job.sample);
  read_parallel(root.child("parallel"), job.parallel, job.train);
  root.child("train").require(job.train.precision == "fp32" || job.device.is_cuda(), "precision",
                              "bf16 and fp16 need device: cuda (the CPU computes in fp32)");
  root.check_no_unknown_keys();
  return job;
}

}  // namespace

JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides) {
  ConfigNode root = ConfigNode::load_file(path);
  return read(root, overrides);
}

JobConfig parse_job_config(const std::string& yaml, const std::string& name,
                           const std::vector<std::string>& overrides) {
  ConfigNode root = ConfigNode::parse(yaml, name);
  return read(root, overrides);
}

}  // namespace tessera
