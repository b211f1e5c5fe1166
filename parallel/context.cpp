#include "parallel/context.h"

#include "parallel/comm_mpi.h"
#include "parallel/mpi_check.h"
#ifdef TESSERA_WITH_CUDA
#include "parallel/comm_nccl.h"
#endif

namespace tessera::parallel {
namespace {

struct MpiGroups {
  std::unique_ptr<MpiCommunicator> world, tp, dp, pp, embedding;
};

// Throws Error unless comm's members are `expected` (a check of the split against the grid).
void check_members(const MpiCommunicator& comm, const std::vector<int>& expected) {
  TS_CHECK(comm.world_ranks() == expected, "parallel: ", comm.describe(),
           " does not match the grid's group");
}

// Collective over MPI_COMM_WORLD: one split per kind of group; the key is the coordinate along
// the group, so group rank == that coordinate.
MpiGroups split_world(const ProcessGrid& grid, int rank, double timeout_s) {
  const GridCoord c = grid.coord_of(rank);
  MpiGroups g;
  g.world = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", timeout_s);
  g.tp = MpiCommunicator::split(MPI_COMM_WORLD, c.dp + grid.dp() * c.pp, c.tp, "tp", timeout_s);
  g.dp = MpiCommunicator::split(MPI_COMM_WORLD, c.tp + grid.tp() * c.pp, c.dp, "dp", timeout_s);
  g.pp = MpiCommunicator::split(MPI_COMM_WORLD, c.tp + grid.tp() * c.dp, c.pp, "pp", timeout_s);
  const bool holds_embedding = grid.pp() == 1 || c.pp == 0 || c.pp == grid.pp() - 1;
  const int color =
      !holds_embedding ? MPI_UNDEFINED : (grid.pp() == 1 ? rank : c.tp + grid.tp() * c.dp);
  g.embedding = MpiCommunicator::split(MPI_COMM_WORLD, color, c.pp, "embedding", timeout_s);
  check_members(*g.tp, grid.tp_group(rank));
  check_members(*g.dp, grid.dp_group(rank));
  check_members(*g.pp, grid.pp_group(rank));
  if (g.embedding) check_members(*g.embedding, grid.embedding_group(rank));
  return g;
}

ProcessGrid world_grid(GridShape shape, int& rank) {
  int initialized = 0;
  TS_MPI_CHECK(MPI_Initialized(&initialized));
  TS_CHECK(initialized, "parallel: MPI is not initialized (create an MpiSession first)");
  rank = mpi_rank(MPI_COMM_WORLD);
  return ProcessGrid(shape, mpi_size(MPI_COMM_WORLD));
}

}  // namespace

ParallelContext::ParallelContext(ProcessGrid grid, int world_rank,
                                 std::unique_ptr<Communicator> world,
                                 std::unique_ptr<Communicator> tp, std::unique_ptr<Communicator> dp,
                                 std::unique_ptr<Communicator> pp,
                                 std::unique_ptr<Communicator> embedding)
    : grid_(grid),
      world_rank_(world_rank),
      world_(std::move(world)),
      tp_(std::move(tp)),
      dp_(std::move(dp)),
      pp_(std::move(pp)),
      embedding_(std::move(embedding)) {
  TS_CHECK(world_ && tp_ && dp_ && pp_, "ParallelContext: world, tp, dp and pp are required");
}

ParallelContext::~ParallelContext() {
  embedding_.reset();
  pp_.reset();
  dp_.reset();
  tp_.reset();
  world_.reset();
}

Communicator& ParallelContext::embedding() const {
  TS_CHECK(embedding_ != nullptr, "parallel: world rank ", world_rank_, " is pipeline stage ",
           coord().pp, " of ", grid_.pp(),
           ", which holds no embedding: only the first and last stages have an embedding group");
  return *embedding_;
}

void ParallelContext::set_timeout(double seconds) {
  for (Communicator* c : {world_.get(), tp_.get(), dp_.get(), pp_.get(), embedding_.get()}) {
    if (c) c->set_timeout(seconds);
  }
}

ParallelContext make_local_context() {
  auto self = [](const char* name) { return std::make_unique<LocalCommunicator>(name); };
  return ParallelContext(ProcessGrid({1, 1, 1}, 1), 0, self("world"), self("tp"), self("dp"),
                         self("pp"), self("embedding"));
}

ParallelContext make_mpi_context(GridShape shape, double timeout_s) {
  int rank = 0;
  ProcessGrid grid = world_grid(shape, rank);
  MpiGroups g = split_world(grid, rank, timeout_s);
  return ParallelContext(grid, rank, std::move(g.world), std::move(g.tp), std::move(g.dp),
                         std::move(g.pp), std::move(g.embedding));
}

ParallelContext make_nccl_context(GridShape shape, int device, double timeout_s) {
#ifdef TESSERA_WITH_CUDA
  int rank = 0;
  ProcessGrid grid = world_grid(shape, rank);
  MpiGroups g = split_world(grid, rank, timeout_s);
  auto nccl = [&](std::unique_ptr<MpiCommunicator> m) -> std::unique_ptr<Communicator> {
    if (!m) return nullptr;
    return std::make_unique<NcclCommunicator>(std::move(m), device, timeout_s);
  };
  // Same order on every rank (NCCL initialization is collective per group).
  auto world = nccl(std::move(g.world));
  auto tp = nccl(std::move(g.tp));
  auto dp = nccl(std::move(g.dp));
  auto pp = nccl(std::move(g.pp));
  auto embedding = nccl(std::move(g.embedding));
  return ParallelContext(grid, rank, std::move(world), std::move(tp), std::move(dp), std::move(pp),
                         std::move(embedding));
#else
  (void)shape;
  (void)device;
  (void)timeout_s;
  TS_THROW(
      "parallel: this build has no CUDA backend, so no NCCL communicators: rebuild with "
      "nvcc found (TESSERA_CUDA=ON) or use the MPI context on cpu");
#endif
}

}  // namespace tessera::parallel
