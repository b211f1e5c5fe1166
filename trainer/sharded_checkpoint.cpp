#include "trainer/sharded_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "parallel/grid.h"
#include "parallel/tensor_parallel.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kFormat = "tessera-sharded";
constexpr int kVersion = 1;
const char* const kKinds[3] = {"params", "exp_avg", "exp_avg_sq"};

std::string rank_file(int world_rank) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "rank_%05d.safetensors", world_rank);
  return buf;
}

parallel::ProcessGrid grid_of(const ShardLayout& l) {
  return parallel::ProcessGrid({l.tp, l.pp, l.dp}, l.tp * l.pp * l.dp);
}

// Where the model part of (tp rank, stage) sits in layout l, without its ranks: its tp group is a
// LocalCommunicator, which `comm` keeps alive.
Gpt2Layout offline_layout(const ShardLayout& l, int tp_rank, int stage,
                          std::unique_ptr<parallel::Communicator>& comm) {
  comm = std::make_unique<parallel::LocalCommunicator>("tp", tp_rank, l.tp);
  return Gpt2Layout{l.dp,
                    l.tp > 1 ? comm.get() : nullptr,
                    stage,
                    l.pp,
                    l.layers_per_stage,
                    /*sequence_parallel=*/false,
                    l.virtual_stages};
}

json layout_json(const ShardLayout& l) {
  return {{"tp", l.tp},
          {"pp", l.pp},
          {"dp", l.dp},
          {"zero", l.zero},
          {"layers_per_stage", l.layers_per_stage},
          {"virtual_stages", l.virtual_stages}};
}

// index.json: the layout, each world rank's file and coordinates, and for each (tp, pp) part its
// units and the tensors in them.
json make_index(const Gpt2Config& config, const ShardLayout& l) {
  json parts = json::array();
  for (int s = 0; s < l.pp; ++s)
    for (int i = 0; i < l.tp; ++i) {
      std::unique_ptr<parallel::Communicator> comm;
      const ParameterSet ps = Gpt2::parameter_layout(config, offline_layout(l, i, s, comm));
      json units = json::array();
      for (const ParameterUnit& u : ps.units()) {
        json entries = json::array();
        for (size_t k = u.first_entry; k < u.end_entry; ++k) {
          const ParameterEntry& e = ps.entries()[k];
          entries.push_back({{"name", e.name},
                             {"offset", e.offset - u.offset},
                             {"shape", e.shape},
                             {"split", {e.split.dim, e.split.parts, e.split.index, e.split.blocks}},
                             {"tied_copy", u.name == "head"}});
        }
        units.push_back({{"name", u.name}, {"numel", u.numel}, {"entries", entries}});
      }
      parts.push_back({{"tp", i}, {"pp", s}, {"units", units}});
    }
  json ranks = json::array();
  const parallel::ProcessGrid grid = grid_of(l);
  for (int r = 0; r < grid.world_size(); ++r) {
    const parallel::GridCoord c = grid.coord_of(r);
    ranks.push_back({{"file", rank_file(r)}, {"tp", c.tp}, {"pp", c.pp}, {"dp", c.dp}});
  }
  return {{"format", kFormat},
          {"version", kVersion},
          {"layout", layout_json(l)},
          {"ranks", ranks},
          {"parts", parts}};
}

// One rank's shard: chunk(unit, kind) for every unit of its part and the three kinds.
void write_shard(const fs::path& path, const ParameterSet& params,
                 const std::function<Tensor(int unit, int kind)>& chunk) {
  std::map<std::string, Tensor> tensors;
  for (size_t u = 0; u < params.units().size(); ++u)
    for (int kind = 0; kind < 3; ++kind)
      tensors[std::string(kKinds[kind]) + "/" + params.units()[u].name] =
          chunk(static_cast<int>(u), kind);
  save_safetensors(path.string(), tensors, {{"format", kFormat}});
}

}  // namespace

std::string ShardLayout::str() const {
  return ::tessera::detail::cat(
      "tp=", tp, " pp=", pp, " dp=", dp, " zero=", zero,
      virtual_stages > 1 ? ::tessera::detail::cat(" virtual_stages=", virtual_stages) : "");
}

std::string save_sharded_checkpoint(const std::string& root, const Gpt2& model,
                                    const parallel::DistributedAdamW& optimizer,
                                    parallel::ParallelContext& ctx, const ShardLayout& layout,
                                    const TrainerState& state, const std::string& tokenizer_path,
                                    int64_t keep) {
  const bool writer = ctx.world_rank() == 0;
  const fs::path tmp = (fs::path(root) / checkpoint_step_name(state.step)).string() + ".tmp";
  if (writer) begin_checkpoint_folder(root, state.step);
  ctx.world().barrier();
  write_shard(tmp / rank_file(ctx.world_rank()), model.params(),
              [&](int unit, int kind) { return optimizer.checkpoint_chunk(unit, kind); });
  ctx.world().barrier();  // every shard is on disk
  std::string folder = (fs::path(root) / checkpoint_step_name(state.step)).string();
  if (writer) {
    write_text_atomic((tmp / kShardIndexFile).string(),
                      make_index(model.config(), layout).dump(1) + "\n");
    write_checkpoint_metadata(tmp.string(), model.config(), state, optimizer.steps_taken(),
                              tokenizer_path);
    folder = finish_checkpoint_folder(root, state.step, keep);
  }
  ctx.world().barrier();  // the folder is in place when any rank returns
  return folder;
}

CheckpointReader::CheckpointReader(const std::string& dir) : dir_(dir) {
  TS_CHECK(fs::is_directory(dir), "checkpoint folder '", dir, "' does not exist");
  config_ = read_checkpoint_model_config(dir);
  sharded_ = is_sharded_checkpoint(dir);
  if (!sharded_) return;
  const fs::path index_path = fs::path(dir) / kShardIndexFile;
  std::ifstream in(index_path);
  try {
    const json index = json::parse(in);
    TS_CHECK(index.at("format") == kFormat && index.at("version") == kVersion, "'",
             index_path.string(), "' is not a version ", kVersion, " ", kFormat, " index");
    const json& l = index.at("layout");
    layout_ = {l.at("tp").get<int>(),
               l.at("pp").get<int>(),
               l.at("dp").get<int>(),
               l.at("zero").get<int>(),
               l.at("layers_per_stage").get<std::vector<int64_t>>(),
               l.value("virtual_stages", 1)};
    for (const json& r : index.at("ranks")) {
      const std::string file = (fs::path(dir) / r.at("file").get<std::string>()).string();
      TS_CHECK(fs::exists(file), "checkpoint '", dir, "' lacks the shard '", file,
               "' its index lists");
      files_[::tessera::detail::cat(r.at("tp").get<int>(), ",", r.at("pp").get<int>(), ",",
                                    r.at("dp").get<int>())] = file;
    }
    for (const json& part : index.at("parts"))
      for (const json& u : part.at("units"))
        for (const json& e : u.at("entries")) {
          if (e.at("tied_copy").get<bool>()) continue;
          const std::vector<int> sp = e.at("split").get<std::vector<int>>();
          pieces_[e.at("name").get<std::string>()].push_back(
              {part.at("tp").get<int>(), part.at("pp").get<int>(), u.at("name").get<std::string>(),
               u.at("numel").get<int64_t>(), e.at("offset").get<int64_t>(),
               e.at("shape").get<Shape>(), TpSplit{sp.at(0), sp.at(1), sp.at(2), sp.at(3)}});
        }
  } catch (const json::exception& e) {
    TS_THROW("checkpoint index '", index_path.string(),
             "' is unreadable or incomplete: ", e.what());
  }
}

Tensor CheckpointReader::whole(const std::string& kind, const std::string& name) const {
  if (!sharded_) {
    const bool params = kind == "params";
    const std::string file =
        (fs::path(dir_) / (params ? "model.safetensors" : "optimizer.safetensors")).string();
    return load_safetensors_tensor(file, params ? name : kind + "." + name);
  }
  auto it = pieces_.find(name);
  TS_CHECK(it != pieces_.end(), "checkpoint '", dir_, "' has no tensor '", name, "'");
  std::vector<Piece> pieces = it->second;
  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& a, const Piece& b) { return a.tp < b.tp; });
  if (pieces.front().split.replicated()) pieces.resize(1);
  const int64_t part_numel = shape_numel(pieces.front().shape);
  Tensor parts = Tensor::empty({part_numel * static_cast<int64_t>(pieces.size())}, DType::f32);
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Piece& pc = pieces[p];
    // The unit's chunks from its dp ranks, then the tensor's place in the unit.
    // The unit from its dp ranks' chunks (the tensors of one unit come one after another, so
    // the last unit assembled is kept), then the tensor's place in it.
    const std::string key = ::tessera::detail::cat(kind, "/", pc.tp, ",", pc.pp, "/", pc.unit);
    if (cached_key_ != key) {
      const int64_t chunk = pc.unit_numel / layout_.dp;
      Tensor unit = Tensor::empty({pc.unit_numel}, DType::f32);
      for (int j = 0; j < layout_.dp; ++j) {
        const std::string& file = files_.at(::tessera::detail::cat(pc.tp, ",", pc.pp, ",", j));
        const Tensor c = load_safetensors_tensor(file, kind + "/" + pc.unit);
        TS_CHECK(c.numel() == chunk && c.dtype() == DType::f32, "shard '", file, "': '", kind, "/",
                 pc.unit, "' holds ", c.numel(), " ", dtype_name(c.dtype()),
                 " values, the index says ", chunk, " f32");
        unit.carve(j * chunk, {chunk}).copy_from(c);
      }
      cached_key_ = key;
      cached_unit_ = unit;
    }
    parts.carve(static_cast<int64_t>(p) * part_numel, {part_numel})
        .copy_from(cached_unit_.carve(pc.offset, {part_numel}));
  }
  if (pieces.size() == 1) return parts.view(pieces.front().shape);
  return parallel::tp_join(parts, pieces.front().split,
                           parallel::tp_full_shape(pieces.front().shape, pieces.front().split));
}

TrainerState load_any_checkpoint(const std::string& dir, Gpt2& local,
                                 OptimizerState* local_moments) {
  const CheckpointReader reader(dir);
  check_checkpoint_model(dir, local.config());
  const bool weights_only_folder = !local_moments && !has_trainer_state(dir);
  const TrainerState state =
      weights_only_folder
          ? TrainerState{}
          : read_trainer_state(dir, local_moments ? &local_moments->steps : nullptr);
  ParameterSet& ps = local.params();
  if (local_moments) {
    local_moments->exp_avg = Tensor::zeros({ps.total()}, DType::f32);
    local_moments->exp_avg_sq = Tensor::zeros({ps.total()}, DType::f32);
  }
  for (const ParameterEntry& e : ps.entries()) {
    const Shape full = parallel::tp_full_shape(e.shape, e.split);
    for (int kind = 0; kind < (local_moments ? 3 : 1); ++kind) {
      const Tensor w = reader.whole(kKinds[kind], e.name);
      TS_CHECK(w.shape() == full, "checkpoint '", dir, "': ", kKinds[kind], " of '", e.name,
               "' is ", shape_str(w.shape()), ", the model expects ", shape_str(full));
      Tensor dst = kind == 0 ? ps.param(e)
                             : (kind == 1 ? local_moments->exp_avg : local_moments->exp_avg_sq)
                                   .carve(e.offset, e.shape);
      dst.copy_from(parallel::tp_cut(w, e.split));
    }
  }
  return state;
}

void convert_checkpoint(const std::string& from, const std::string& to, const ShardLayout* target) {
  const CheckpointReader src(from);
  const Gpt2Config& config = src.config();
  const fs::path out = fs::path(to).lexically_normal();
  const std::string target_dir = out.has_filename() ? out.string() : out.parent_path().string();
  TS_CHECK(!fs::exists(target_dir), "'", target_dir, "' exists: convert writes a new folder");
  const fs::path tmp = target_dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  TS_CHECK(!ec, "cannot create '", tmp.string(), "': ", ec.message());
  int64_t adam_steps = 0;
  const TrainerState state = read_trainer_state(from, &adam_steps);

  // Fills a model part and its moments (laid out like its ParameterSet) from the source.
  auto fill = [&](Gpt2& part, OptimizerState& moments) {
    moments.steps = adam_steps;
    OptimizerState* m = &moments;
    ParameterSet& ps = part.params();
    m->exp_avg = Tensor::zeros({ps.total()}, DType::f32);
    m->exp_avg_sq = Tensor::zeros({ps.total()}, DType::f32);
    for (const ParameterEntry& e : ps.entries())
      for (int kind = 0; kind < 3; ++kind) {
        Tensor dst = kind == 0 ? ps.param(e)
                               : (kind == 1 ? m->exp_avg : m->exp_avg_sq).carve(e.offset, e.shape);
        dst.copy_from(parallel::tp_cut(src.whole(kKinds[kind], e.name), e.split));
      }
  };

  if (!target) {
    Gpt2 whole(config);
    OptimizerState moments;
    fill(whole, moments);
    write_consolidated_checkpoint(tmp.string(), whole, &moments);
  } else {
    const parallel::ProcessGrid grid = grid_of(*target);
    for (int s = 0; s < target->pp; ++s)
      for (int i = 0; i < target->tp; ++i) {
        std::unique_ptr<parallel::Communicator> comm;
        Gpt2 part(config, Device::cpu(), offline_layout(*target, i, s, comm));
        OptimizerState moments;
        fill(part, moments);
        const ParameterSet& ps = part.params();
        for (int j = 0; j < target->dp; ++j) {
          write_shard(tmp / rank_file(grid.rank_of({i, j, s})), ps, [&](int unit, int kind) {
            const ParameterUnit& u = ps.units()[unit];
            const int64_t n = u.numel / target->dp;
            const Tensor& flat =
                kind == 0
                    ? ps.unit_params(unit)
                    : (kind == 1 ? moments.exp_avg : moments.exp_avg_sq).carve(u.offset, {u.numel});
            return flat.carve(j * n, {n}).to(Device::cpu());
          });
        }
      }
    write_text_atomic((tmp / kShardIndexFile).string(), make_index(config, *target).dump(1) + "\n");
  }
  const fs::path tokenizer = fs::path(from) / "tokenizer.json";
  write_checkpoint_metadata(tmp.string(), config, state, adam_steps,
                            fs::exists(tokenizer) ? tokenizer.string() : "");
  fs::rename(tmp, target_dir, ec);
  TS_CHECK(!ec, "cannot rename '", tmp.string(), "' to '", target_dir, "': ", ec.message());
}

}  // namespace tessera
