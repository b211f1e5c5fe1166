// MpiSession: MPI's lifetime as an object, for the launcher and the tests.
#pragma once

namespace tessera::parallel {

class MpiSession {
 public:
  // Calls MPI_Init_thread(MPI_THREAD_FUNNELED: MPI is called from one thread at a time, the
  // main one) unless MPI is already initialized, in which case this session leaves MPI's
  // lifetime to whoever initialized it. Throws Error when MPI was already finalized.
  explicit MpiSession(int* argc = nullptr, char*** argv = nullptr);
  // MPI_Finalize when this session initialized MPI. Communicators must be destroyed first.
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // True when this session called MPI_Init_thread (and so will call MPI_Finalize).
  bool owns_mpi() const { return owns_; }

 private:
  bool owns_ = false;
  int world_rank_ = 0;
  int world_size_ = 1;
};

}  // namespace tessera::parallel
