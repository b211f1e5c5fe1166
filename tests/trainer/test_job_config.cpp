#include "trainer/job_config.h"

#include <gtest/gtest.h>

#include <string>

namespace tessera {
namespace {

// Returns the Error message of parsing `yaml`, or "" when it parses.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_job_config(yaml, "job.yaml", overrides);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(JobConfig, ShippedConfigsParse) {
  const JobConfig job = load_job_config(std::string(TESSERA_SOURCE_DIR) + "/configs/tiny.yaml");
  EXPECT_EQ(job.name, "tiny");
  EXPECT_EQ(job.model.n_layer, 4);
  EXPECT_EQ(job.model.d_model, 256);
  EXPECT_EQ(job.model.vocab_size, 4096);
  EXPECT_EQ(job.train.batch_size, 8);
  EXPECT_EQ(job.train.seq_len, 256);
  EXPECT_TRUE(job.device.is_cpu());
  for (const char* other : {"tiny-3d.yaml", "gpt2-124m.yaml"})
    EXPECT_NO_THROW(load_job_config(std::string(TESSERA_SOURCE_DIR) + "/configs/" + other))
        << other;
  const JobConfig gpt2 =
      load_job_config(std::string(TESSERA_SOURCE_DIR) + "/configs/gpt2-124m.yaml");
  EXPECT_TRUE(gpt2.device.is_cuda());
  EXPECT_NEAR(static_cast<double>(gpt2.model.num_params()), 124.5e6, 0.5e6);
}

TEST(JobConfig, DefaultsAndOverrides) {
  const JobConfig job = parse_job_config(
      "name: x\ntrain:\n  lr: 0.01\n", "job.yaml",
      {"train.steps=7", "train.warmup_steps=2", "model.n_layer=2", "eval.every=0"});
  EXPECT_EQ(job.name, "x");
  EXPECT_DOUBLE_EQ(job.train.lr, 0.01);
  EXPECT_EQ(job.train.steps, 7);
  EXPECT_EQ(job.model.n_layer, 2);
  EXPECT_EQ(job.eval.every, 0);
  EXPECT_EQ(job.model.d_model, Gpt2Config{}.d_model);
}

TEST(JobConfig, ErrorsNameFileLineAndKey) {
  std::string e = error_of("model:\n  n_layer: 2\n  n_heads: 4\n");
  EXPECT_NE(e.find("job.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("n_heads"), std::string::npos) << e;
  EXPECT_NE(e.find("n_head"), std::string::npos) << e;

  e = error_of("train:\n  lr: fast\n");
  EXPECT_NE(e.find("job.yaml:2"), std::string::npos) << e;
  EXPECT_NE(e.find("train.lr"), std::string::npos) << e;

  e = error_of("model:\n  n_head: 3\n  d_model: 256\n");
  EXPECT_NE(e.find("d_model"), std::string::npos) << e;
  EXPECT_NE(e.find("job.yaml:3"), std::string::npos) << e;

  e = error_of("train:\n  seq_len: 512\n");  // longer than the default max_seq_len 256
  EXPECT_NE(e.find("seq_len"), std::string::npos) << e;

  e = error_of("device: tpu\n");
  EXPECT_NE(e.find("device"), std::string::npos) << e;

  e = error_of("train: [1, 2\n");  // YAML syntax error
  EXPECT_NE(e.find("job.yaml"), std::string::npos) << e;

  EXPECT_NE(error_of("", {"train.steps=-3"}).find("steps"), std::string::npos);
  EXPECT_EQ(error_of("train:\n  steps: 5\n  warmup_steps: 5\n"), "");
  EXPECT_NE(error_of("train:\n  steps: 5\n  warmup_steps: 6\n").find("warmup_steps"),
            std::string::npos);
}

TEST(JobConfig, InterleavedPipelineNeedsWhatItRunsOn) {
  const std::vector<std::string> ok = {"parallel.pp=2", "parallel.virtual_stages=2",
                                       "train.grad_accum=4"};
  EXPECT_EQ(error_of("", ok), "");
  EXPECT_EQ(parse_job_config("", "job.yaml", ok).parallel.virtual_stages, 2);
  auto with = [&](const std::string& o) {
    std::vector<std::string> v = ok;
    v.push_back(o);
    return error_of("", v);
  };
  EXPECT_NE(with("parallel.pp=1").find("needs parallel.pp > 1"), std::string::npos);
  EXPECT_NE(with("parallel.schedule=gpipe").find("needs parallel.schedule '1f1b'"),
            std::string::npos);
  EXPECT_NE(with("train.grad_accum=3").find("multiple of parallel.pp"), std::string::npos);
  EXPECT_NE(with("parallel.virtual_stages=0").find("virtual_stages"), std::string::npos);
  // 16-bit GEMMs are CUDA modes.
  EXPECT_NE(with("train.precision=bf16").find("need device: cuda"), std::string::npos);
  EXPECT_NE(with("train.precision=fp16").find("need device: cuda"), std::string::npos);
  EXPECT_EQ(with("device=cuda"), "");
  EXPECT_EQ(error_of("device: cuda\ntrain:\n  precision: bf16\n"), "");
  EXPECT_EQ(
      parse_job_config("device: cuda\ntrain:\n  precision: fp16\n", "job.yaml").train.gemm_dtype(),
      DType::f16);
  EXPECT_NE(with("train.precision=int8").find("must be 'fp32', 'bf16' or 'fp16'"),
            std::string::npos);
  // One layer count per virtual stage: pp x virtual_stages of them.
  EXPECT_NE(with("parallel.layers_per_stage=[2,2]").find("parallel.pp x parallel.virtual_stages"),
            std::string::npos);
  EXPECT_EQ(with("parallel.layers_per_stage=[1,1,1,1]"), "");
}

TEST(JobConfig, MissingFileIsOneClearError) {
  try {
    load_job_config("configs/does-not-exist.yaml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("configs/does-not-exist.yaml"), std::string::npos);
  }
}

}  // namespace
}  // namespace tessera
