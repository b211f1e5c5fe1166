// ProcessGrid: the 3D layout of ranks, Megatron order. Tensor-parallel ranks are adjacent (fastest
// varying, so TP traffic stays inside a node), then data parallel, then pipeline:
//   world_rank = tp_rank + tp * (dp_rank + dp * pp_rank)
// Pure functions of (tp, pp, dp) and a rank: no MPI here (ParallelContext builds the groups).
#pragma once

#include <string>
#include <vector>

namespace tessera::parallel {

// Degrees of parallelism; dp = 0 means "whatever the world size leaves" (world / (tp * pp)).
struct GridShape {
  int tp = 1;
  int pp = 1;
  int dp = 1;
};

// A rank's position in the grid.
struct GridCoord {
  int tp = 0;
  int dp = 0;
  int pp = 0;
  bool operator==(const GridCoord&) const = default;
};

class ProcessGrid {
 public:
  // Throws Error when a degree is < 1 (dp < 0), when tp * pp * dp != world_size ("parallel: tp=2
  // × pp=2 × dp=2 = 8 but mpirun started 4 ranks: ..."), or when dp = 0 and tp * pp does not
  // divide world_size.
  ProcessGrid(GridShape shape, int world_size);

  const GridShape& shape() const { return shape_; }
  int tp() const { return shape_.tp; }
  int pp() const { return shape_.pp; }
  int dp() const { return shape_.dp; }
  int world_size() const { return world_size_; }

  // Throws Error for a coordinate or rank outside the grid.
  int rank_of(GridCoord c) const;
  GridCoord coord_of(int world_rank) const;

  // Members (world ranks, ascending; index = rank in the group) of the groups holding world_rank:
  // tp: same dp and pp; dp: same tp and pp; pp: same tp and dp (index = pipeline stage).
  std::vector<int> tp_group(int world_rank) const;
  std::vector<int> dp_group(int world_rank) const;
  std::vector<int> pp_group(int world_rank) const;
  // First and last pipeline stage with world_rank's tp and dp coordinates (they tie the input
  // embedding to the LM head); {world_rank} when pp == 1; empty for a middle stage.
  std::vector<int> embedding_group(int world_rank) const;

  bool is_first_stage(int world_rank) const { return coord_of(world_rank).pp == 0; }
  bool is_last_stage(int world_rank) const { return coord_of(world_rank).pp == shape_.pp - 1; }
  // "tp=2 × pp=2 × dp=2".
  std::string str() const;

 private:
  GridShape shape_;
  int world_size_;
};

}  // namespace tessera::parallel
