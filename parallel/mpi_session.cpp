#include "parallel/mpi_session.h"

#include "parallel/mpi_check.h"

namespace tessera::parallel {

MpiSession::MpiSession(int* argc, char*** argv) {
  int finalized = 0;
  TS_MPI_CHECK(MPI_Finalized(&finalized));
  TS_CHECK(!finalized, "MpiSession: MPI was already finalized; it cannot be initialized again");
  int initialized = 0;
  TS_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    TS_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_ = true;
  }
  TS_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  TS_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
}

MpiSession::~MpiSession() {
  if (!owns_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace tessera::parallel
