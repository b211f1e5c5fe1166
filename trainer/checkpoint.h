// Checkpoints: one folder per step that Hugging Face `transformers` opens as it is
// (config.json, model.safetensors with GPT-2 names, tokenizer.json), plus optimizer.safetensors and
// trainer_state.json so a resumed run continues the same loss curve bit for bit.
// A folder appears only complete: it is written as <name>.tmp and renamed into place.
#pragma once

#include <cstdint>
#include <string>

#include "model/gpt2.h"
#include "trainer/dataset.h"
#include "trainer/loss_scaler.h"

namespace tessera {

// AdamW's state over the whole model: moments in the flat index space of the model's
// ParameterSet (ParameterSet::total() elements, entry e at e.offset), cpu f32.
struct OptimizerState {
  Tensor exp_avg, exp_avg_sq;
  int64_t steps = 0;
};

struct TrainerState {
  int64_t step = 0;      // optimizer steps completed
  LoaderState loader{};  // training data position after `step` steps
  double train_loss = 0.0;
  LossScaleState loss_scale{};  // fp16 loss scaling (unused, and at its default, otherwise)
};

// Writes <root>/step_NNNNNN/ (model, optimizer, state, HF config.json, a copy of tokenizer_path
// unless empty), points <root>/latest at it, and deletes all but the newest `keep` step folders.
// Returns the folder. Throws Error (leaving earlier checkpoints intact) on any I/O failure.
std::string save_checkpoint(const std::string& root, const Gpt2& model,
                            const OptimizerState* optimizer, const TrainerState& state,
                            const std::string& tokenizer_path, int64_t keep);

// Writes text to file through file.tmp and a rename; throws Error naming the file on failure.
void write_text_atomic(const std::string& file, const std::string& text);

// "step_000600".
std::string checkpoint_step_name(int64_t step);

// Writes model.safetensors (Hugging Face names) and, when optimizer is non-null,
// optimizer.safetensors ("exp_avg.<name>", "exp_avg_sq.<name>") of a whole model into dir.
void write_consolidated_checkpoint(const std::string& dir, const Gpt2& model,
                                   const OptimizerState* optimizer);

// Throws Error naming the checkpoint when its model (config.json) is not `wanted`.
void check_checkpoint_model(const std::string& dir, const Gpt2Config& wanted);

// The folder mechanics every checkpoint kind shares. begin: creates <root>/step_NNNNNN.tmp afresh
// and returns it; finish: renames it into place (replacing a same-step folder), points
// <root>/latest at it, deletes all but the newest `keep` step folders, and returns it. A folder
// is never seen half-written: readers ignore *.tmp.
std::string begin_checkpoint_folder(const std::string& root, int64_t step);
std::string finish_checkpoint_folder(const std::string& root, int64_t step, int64_t keep);
// Writes trainer_state.json, the Hugging Face config.json and a copy of the tokenizer (unless
// tokenizer_path is empty) into dir.
void write_checkpoint_metadata(const std::string& dir, const Gpt2Config& config,
                               const TrainerState& state, int64_t adam_steps,
                               const std::string& tokenizer_path);
// trainer_state.json of a checkpoint folder (and AdamW's step count when adam_steps is non-null).
TrainerState read_trainer_state(const std::string& dir, int64_t* adam_steps = nullptr);

// The newest complete checkpoint folder under root (consolidated or sharded), or "" when there
// is none.
std::string latest_checkpoint(const std::string& root);

// The index a sharded checkpoint folder holds (trainer/sharded_checkpoint.h writes it).
inline constexpr const char* kShardIndexFile = "index.json";
// Whether dir holds a sharded checkpoint (an index.json).
bool is_sharded_checkpoint(const std::string& dir);
// Whether dir holds weights of either kind: model.safetensors, or a sharded checkpoint's index.
bool holds_weights(const std::string& dir);
// Whether dir has a trainer_state.json (checkpoints do; a plain Hugging Face folder does not).
bool has_trainer_state(const std::string& dir);

// The model shape recorded in a checkpoint's config.json.
Gpt2Config read_checkpoint_model_config(const std::string& dir);

// Loading, of this kind or the sharded one into any layout: load_any_checkpoint in
// sharded_checkpoint.h.

}  // namespace tessera
