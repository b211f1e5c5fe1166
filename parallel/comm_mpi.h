// MPI backend of Communicator: CPU tensors, nonblocking MPI collectives (MPI_Iallreduce,
// MPI_Ireduce_scatter_block, MPI_Iallgather, MPI_Ibcast, MPI_Isend/Irecv, MPI_Ibarrier) polled with
// MPI_Test until the deadline, and a duplicated communicator as the timeout control channel.
// bf16/f16 reductions are widened to f32 on the wire (reductions accumulate in fp32). MPI makes
// progress only inside MPI calls: an _async op advances when some wait/test polls.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/comm_timeout.h"
#include "parallel/communicator.h"

namespace tessera::parallel {

class MpiCommunicator final : public Communicator {
 public:
  // Collective over `comm` (which the caller keeps): duplicates it into a data and a control
  // communicator, both with MPI_ERRORS_RETURN. Blocks without a timeout (startup only).
  MpiCommunicator(MPI_Comm comm, std::string name, double timeout_s);
  // Collective over `parent`: MPI_Comm_split(parent, color, key), then as above; returns null on
  // ranks that pass color MPI_UNDEFINED.
  static std::unique_ptr<MpiCommunicator> split(MPI_Comm parent, int color, int key,
                                                std::string name, double timeout_s);
  // Local: drains in-flight ops (see Communicator), then frees both MPI communicators (nothing
  // when MPI is already finalized).
  ~MpiCommunicator() override;

  MPI_Comm mpi_comm() const { return data_; }
  // Answers peers' timeout surveys while waiting at `info` (the NCCL backend calls it too).
  void answer_survey(const OpInfo& info) { control_->answer(info.seq, info.kind); }
  // After a timeout at `info`: surveys the group and returns the diagnosis (see comm_timeout.h).
  std::string survey_after_timeout(const OpInfo& info);

 protected:
  void check_device(const char* op, const char* arg, const Tensor& t) const override;
  std::shared_ptr<detail::PendingOp> start_all_reduce(const Tensor& t, ReduceOp op) override;
  std::shared_ptr<detail::PendingOp> start_reduce_scatter(const Tensor& out, const Tensor& in,
                                                          ReduceOp op) override;
  std::shared_ptr<detail::PendingOp> start_all_gather(const Tensor& out, const Tensor& in) override;
  std::shared_ptr<detail::PendingOp> start_broadcast(const Tensor& t, int root) override;
  std::shared_ptr<detail::PendingOp> start_p2p(const std::vector<P2POp>& ops) override;
  std::shared_ptr<detail::PendingOp> start_barrier() override;
  void on_wait_idle(const OpInfo& info) override { answer_survey(info); }
  std::string on_timeout(const OpInfo& info, double waited_s) override;

 private:
  struct Dup {
    MPI_Comm data;
    MPI_Comm control;
  };
  MpiCommunicator(Dup dup, std::string name, double timeout_s);
  static Dup duplicate(MPI_Comm comm);

  MPI_Comm data_;
  MPI_Comm control_comm_;
  std::unique_ptr<ControlChannel> control_;
};

// Rank and size of `comm`, checked.
int mpi_rank(MPI_Comm comm);
int mpi_size(MPI_Comm comm);

}  // namespace tessera::parallel
