#include "trainer/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kTokenizerFile = "tokenizer.json";

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%06lld", static_cast<long long>(step));
  return buf;
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  TS_CHECK(in.good(), "checkpoint file '", path.string(), "' is missing");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    TS_THROW("checkpoint file '", path.string(), "' is not valid JSON: ", e.what());
  }
}

json hf_config(const Gpt2Config& m) {
  return {{"architectures", {"GPT2LMHeadModel"}},
          {"model_type", "gpt2"},
          {"vocab_size", m.vocab_size},
          {"n_positions", m.max_seq_len},
          {"n_ctx", m.max_seq_len},
          {"n_embd", m.d_model},
          {"n_layer", m.n_layer},
          {"n_head", m.n_head},
          {"n_inner", nullptr},
          {"activation_function", "gelu_new"},
          {"resid_pdrop", 0.0},
          {"embd_pdrop", 0.0},
          {"attn_pdrop", 0.0},
          {"layer_norm_epsilon", 1e-5},
          {"initializer_range", 0.02},
          {"bos_token_id", m.vocab_size - 1},
          {"eos_token_id", m.vocab_size - 1},
          {"tie_word_embeddings", true},
          {"torch_dtype", "float32"}};
}

std::vector<fs::path> step_folders(const fs::path& root) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("step_", 0) == 0 && name.find('.') == std::string::npos)
      out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void write_text_atomic(const std::string& file, const std::string& text) {
  const fs::path path(file);
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TS_CHECK(out.good(), "cannot write '", tmp.string(), "'");
    out << text;
    out.flush();
    TS_CHECK(out.good(), "write to '", tmp.string(), "' failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  TS_CHECK(!ec, "cannot rename '", tmp.string(), "' to '", path.string(), "': ", ec.message());
}

std::string begin_checkpoint_folder(const std::string& root, int64_t step) {
  const fs::path tmp_dir = (fs::path(root) / step_name(step)).string() + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  TS_CHECK(!ec, "cannot create checkpoint folder '", tmp_dir.string(), "': ", ec.message());
  return tmp_dir.string();
}

void write_checkpoint_metadata(const std::string& dir, const Gpt2Config& config,
                               const TrainerState& state, int64_t adam_steps,
                               const std::string& tokenizer_path) {
  const json st = {
      {"step", state.step},
      {"train_loss", state.train_loss},
      {"loader", {{"epoch", state.loader.epoch}, {"position", state.loader.position}}},
      {"adam_steps", adam_steps},
      {"loss_scale",
       {{"scale", state.loss_scale.scale}, {"good_steps", state.loss_scale.good_steps}}}};
  write_text_atomic(fs::path(dir) / kStateFile, st.dump(2) + "\n");
  write_text_atomic(fs::path(dir) / kConfigFile, hf_config(config).dump(2) + "\n");
  if (!tokenizer_path.empty()) {
    std::error_code ec;
    fs::copy_file(tokenizer_path, fs::path(dir) / kTokenizerFile,
                  fs::copy_options::overwrite_existing, ec);
    TS_CHECK(!ec, "cannot copy tokenizer '", tokenizer_path, "': ", ec.message());
  }
}

std::string finish_checkpoint_folder(const std::string& root, int64_t step, int64_t keep) {
  const fs::path final_dir = fs::path(root) / step_name(step);
  const fs::path tmp_dir = final_dir.string() + ".tmp";
  // Move the complete folder into place; a same-step folder from an earlier run is replaced.
  std::error_code ec;
  if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  TS_CHECK(!ec, "cannot rename '", tmp_dir.string(), "' to '", final_dir.string(),
           "': ", ec.message());
  write_text_atomic(fs::path(root) / "latest", final_dir.filename().string() + "\n");
  std::vector<fs::path> all = step_folders(root);
  for (size_t i = 0; i + keep < all.size(); ++i)
    if (all[i] != final_dir) fs::remove_all(all[i], ec);
  return final_dir.string();
}

std::string checkpoint_step_name(int64_t step) {
  return step_name(step);
}

void write_consolidated_checkpoint(const std::string& dir, const Gpt2& model,
                                   const OptimizerState* optimizer) {
  const fs::path tmp_dir(dir);
  const ParameterSet& params = model.params();
  std::map<std::string, Tensor> weights;
  for (const ParameterEntry& e : params.entries()) weights[e.name] = params.param(e);
  save_safetensors((tmp_dir / kModelFile).string(), weights, {{"format", "pt"}});
  if (optimizer) {
    std::map<std::string, Tensor> moments;
    for (const ParameterEntry& e : params.entries()) {
      moments["exp_avg." + e.name] = optimizer->exp_avg.carve(e.offset, e.shape);
      moments["exp_avg_sq." + e.name] = optimizer->exp_avg_sq.carve(e.offset, e.shape);
    }
    save_safetensors((tmp_dir / kOptimizerFile).string(), moments,
                     {{"optimizer", "adamw"}, {"step", std::to_string(optimizer->steps)}});
  }
}

std::string save_checkpoint(const std::string& root, const Gpt2& model,
                            const OptimizerState* optimizer, const TrainerState& state,
                            const std::string& tokenizer_path, int64_t keep) {
  const fs::path tmp_dir = begin_checkpoint_folder(root, state.step);
  write_consolidated_checkpoint(tmp_dir.string(), model, optimizer);
  write_checkpoint_metadata(tmp_dir.string(), model.config(), state,
                            optimizer ? optimizer->steps : 0, tokenizer_path);
  return finish_checkpoint_folder(root, state.step, keep);
}

std::string latest_checkpoint(const std::string& root) {
  std::ifstream in(fs::path(root) / "latest");
  std::string name;
  if (in >> name) {
    const fs::path dir = fs::path(root) / name;
    if (holds_weights(dir.string())) return dir.string();
  }
  // No pointer (or a stale one): the newest complete folder.
  std::vector<fs::path> all = step_folders(root);
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (holds_weights(it->string()) && has_trainer_state(it->string())) return it->string();
  return "";
}

bool is_sharded_checkpoint(const std::string& dir) {
  return fs::exists(fs::path(dir) / kShardIndexFile);
}

bool holds_weights(const std::string& dir) {
  return fs::exists(fs::path(dir) / kModelFile) || is_sharded_checkpoint(dir);
}

bool has_trainer_state(const std::string& dir) {
  return fs::exists(fs::path(dir) / kStateFile);
}

TrainerState read_trainer_state(const std::string& dir, int64_t* adam_steps) {
  const json st = read_json(fs::path(dir) / kStateFile);
  TrainerState state;
  try {
    state.step = st.at("step").get<int64_t>();
    state.train_loss = st.at("train_loss").get<double>();
    state.loader.epoch = st.at("loader").at("epoch").get<uint64_t>();
    state.loader.position = st.at("loader").at("position").get<uint64_t>();
    if (adam_steps) *adam_steps = st.at("adam_steps").get<int64_t>();
    if (st.contains("loss_scale")) {  // absent in checkpoints written before fp16 existed
      state.loss_scale.scale = st.at("loss_scale").at("scale").get<double>();
      state.loss_scale.good_steps = st.at("loss_scale").at("good_steps").get<int64_t>();
    }
  } catch (const json::exception& e) {
    TS_THROW("checkpoint state '", (fs::path(dir) / kStateFile).string(),
             "' is incomplete: ", e.what());
  }
  return state;
}

Gpt2Config read_checkpoint_model_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / kConfigFile;
  const json j = read_json(path);
  Gpt2Config m;
  try {
    m.n_layer = j.at("n_layer").get<int64_t>();
    m.n_head = j.at("n_head").get<int64_t>();
    m.d_model = j.at("n_embd").get<int64_t>();
    m.vocab_size = j.at("vocab_size").get<int64_t>();
    m.max_seq_len = j.at("n_positions").get<int64_t>();
  } catch (const json::exception& e) {
    TS_THROW("checkpoint config '", path.string(), "' lacks a GPT-2 field: ", e.what());
  }
  m.validate();
  return m;
}

void check_checkpoint_model(const std::string& dir, const Gpt2Config& m) {
  const Gpt2Config saved = read_checkpoint_model_config(dir);
  TS_CHECK(saved.n_layer == m.n_layer && saved.n_head == m.n_head && saved.d_model == m.d_model &&
               saved.vocab_size == m.vocab_size && saved.max_seq_len == m.max_seq_len,
           "checkpoint '", dir, "' holds a model with n_layer=", saved.n_layer,
           " n_head=", saved.n_head, " d_model=", saved.d_model, " vocab_size=", saved.vocab_size,
           " max_seq_len=", saved.max_seq_len, ", but the config asks for n_layer=", m.n_layer,
           " n_head=", m.n_head, " d_model=", m.d_model, " vocab_size=", m.vocab_size,
           " max_seq_len=", m.max_seq_len);
}

}  // namespace tessera
