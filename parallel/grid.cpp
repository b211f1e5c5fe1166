#include "parallel/grid.h"

#include "core/error.h"

namespace tessera::parallel {

ProcessGrid::ProcessGrid(GridShape shape, int world_size) : shape_(shape), world_size_(world_size) {
  TS_CHECK_GE(world_size, 1, "parallel: world size");
  TS_CHECK(shape.tp >= 1 && shape.pp >= 1 && shape.dp >= 0, "parallel: tp=", shape.tp,
           ", pp=", shape.pp, ", dp=", shape.dp,
           ": tp and pp must be >= 1, dp >= 1 (or 0 to fill the world)");
  const int model = shape.tp * shape.pp;
  if (shape.dp == 0) {
    TS_CHECK(world_size % model == 0, "parallel: tp=", shape.tp, " × pp=", shape.pp, " = ", model,
             " does not divide the ", world_size, " ranks mpirun started: start a multiple of ",
             model, " ranks or change parallel.tp/pp");
    shape_.dp = world_size / model;
  }
  const int product = model * shape_.dp;
  TS_CHECK(product == world_size, "parallel: tp=", shape_.tp, " × pp=", shape_.pp,
           " × dp=", shape_.dp, " = ", product, " but mpirun started ", world_size,
           " ranks: change parallel.tp/pp/dp so that their product is the number of ranks, or run "
           "mpirun -np ",
           product);
}

int ProcessGrid::rank_of(GridCoord c) const {
  TS_CHECK(c.tp >= 0 && c.tp < shape_.tp && c.dp >= 0 && c.dp < shape_.dp && c.pp >= 0 &&
               c.pp < shape_.pp,
           "parallel: coordinate (tp=", c.tp, ", dp=", c.dp, ", pp=", c.pp, ") outside ", str());
  return c.tp + shape_.tp * (c.dp + shape_.dp * c.pp);
}

GridCoord ProcessGrid::coord_of(int world_rank) const {
  TS_CHECK(world_rank >= 0 && world_rank < world_size_, "parallel: rank ", world_rank,
           " outside the world of ", world_size_);
  GridCoord c;
  c.tp = world_rank % shape_.tp;
  c.dp = (world_rank / shape_.tp) % shape_.dp;
  c.pp = world_rank / (shape_.tp * shape_.dp);
  return c;
}

std::vector<int> ProcessGrid::tp_group(int world_rank) const {
  GridCoord c = coord_of(world_rank);
  std::vector<int> out;
  for (c.tp = 0; c.tp < shape_.tp; ++c.tp) out.push_back(rank_of(c));
  return out;
}

std::vector<int> ProcessGrid::dp_group(int world_rank) const {
  GridCoord c = coord_of(world_rank);
  std::vector<int> out;
  for (c.dp = 0; c.dp < shape_.dp; ++c.dp) out.push_back(rank_of(c));
  return out;
}

std::vector<int> ProcessGrid::pp_group(int world_rank) const {
  GridCoord c = coord_of(world_rank);
  std::vector<int> out;
  for (c.pp = 0; c.pp < shape_.pp; ++c.pp) out.push_back(rank_of(c));
  return out;
}

std::vector<int> ProcessGrid::embedding_group(int world_rank) const {
  const std::vector<int> stages = pp_group(world_rank);
  if (stages.size() == 1) return stages;
  const GridCoord c = coord_of(world_rank);
  if (c.pp != 0 && c.pp != shape_.pp - 1) return {};
  return {stages.front(), stages.back()};
}

std::string ProcessGrid::str() const {
  return ::tessera::detail::cat("tp=", shape_.tp, " × pp=", shape_.pp, " × dp=", shape_.dp);
}

}  // namespace tessera::parallel
