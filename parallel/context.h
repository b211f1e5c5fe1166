// ParallelContext: the process grid and the communicators of this rank's groups (world, tp, dp, pp,
// embedding). No globals: it is made once at startup and passed explicitly to whatever
// communicates; destroying it frees the communicators.
#pragma once

#include <memory>

#include "parallel/communicator.h"
#include "parallel/grid.h"

namespace tessera::parallel {

class ParallelContext {
 public:
  // embedding is null on middle pipeline stages (they hold no embedding).
  ParallelContext(ProcessGrid grid, int world_rank, std::unique_ptr<Communicator> world,
                  std::unique_ptr<Communicator> tp, std::unique_ptr<Communicator> dp,
                  std::unique_ptr<Communicator> pp, std::unique_ptr<Communicator> embedding);
  ParallelContext(ParallelContext&&) noexcept = default;
  ParallelContext& operator=(ParallelContext&&) noexcept = default;
  // Frees the communicators, in the same order on every rank.
  ~ParallelContext();

  const ProcessGrid& grid() const { return grid_; }
  int world_rank() const { return world_rank_; }
  GridCoord coord() const { return grid_.coord_of(world_rank_); }

  Communicator& world() const { return *world_; }
  Communicator& tp() const { return *tp_; }
  Communicator& dp() const { return *dp_; }
  Communicator& pp() const { return *pp_; }
  bool in_embedding_group() const { return embedding_ != nullptr; }
  // Throws Error on a middle pipeline stage.
  Communicator& embedding() const;

  // Sets the timeout of every communicator.
  void set_timeout(double seconds);

 private:
  ProcessGrid grid_;
  int world_rank_;
  std::unique_ptr<Communicator> world_, tp_, dp_, pp_, embedding_;
};

// The 1-rank context (tp = pp = dp = 1, LocalCommunicators): a process not started by mpirun
// trains with it, without initializing MPI.
ParallelContext make_local_context();

// Collective over MPI_COMM_WORLD (MPI must be initialized, see MpiSession): checks the grid
// against the world size (Error naming the numbers), then splits the world into this rank's
// groups, MPI backend (cpu tensors). Blocks without a timeout while splitting.
ParallelContext make_mpi_context(GridShape shape, double timeout_s = 300.0);

// Same groups with NCCL communicators for CUDA tensors on `device` (each bootstrapped over the
// MPI communicator of its group); throws Error in a build without CUDA.
ParallelContext make_nccl_context(GridShape shape, int device, double timeout_s = 300.0);

}  // namespace tessera::parallel
