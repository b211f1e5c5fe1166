// NCCL backend of Communicator (CUDA builds only): CUDA tensors on one device, one communication
// stream per communicator, handles are CUDA events. The NCCL communicator is non-blocking
// (ncclConfig_t::blocking = 0) so that a timeout can ncclCommAbort it instead of hanging; the
// missing ranks are found over the MPI communicator of the same group (see comm_timeout.h), and
// the Error reads as the MPI backend's. NCCL reduces bf16/f16 in their own precision (keep
// gradients in f32 where fp32 accumulation matters).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "parallel/comm_mpi.h"

namespace tessera::parallel {

namespace detail {
// Shared with in-flight ops, which must not touch an aborted communicator.
struct NcclShared {
  ncclComm_t comm = nullptr;
  bool aborted = false;
};
}  // namespace detail

class NcclCommunicator final : public Communicator {
 public:
  // Collective over mpi's group: its rank 0 makes the ncclUniqueId and broadcasts it over `mpi`;
  // every member initializes a non-blocking NCCL communicator on CUDA device `device`, waiting at
  // most timeout_s (then ncclCommAbort and Error). Takes `mpi` (bootstrap and the timeout control
  // channel) and names the group after it.
  NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, int device, double timeout_s);
  // Drains in-flight ops, then ncclCommFinalize/ncclCommDestroy (nothing more after an abort).
  ~NcclCommunicator() override;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  // Every op first waits (on the device) for the work queued so far on `s`; default: the legacy
  // default stream. wait() on a handle synchronizes the host with the op.
  void set_compute_stream(cudaStream_t s) { compute_ = s; }

 protected:
  void check_device(const char* op, const char* arg, const Tensor& t) const override;
  std::shared_ptr<detail::PendingOp> start_all_reduce(const Tensor& t, ReduceOp op) override;
  std::shared_ptr<detail::PendingOp> start_reduce_scatter(const Tensor& out, const Tensor& in,
                                                          ReduceOp op) override;
  std::shared_ptr<detail::PendingOp> start_all_gather(const Tensor& out, const Tensor& in) override;
  std::shared_ptr<detail::PendingOp> start_broadcast(const Tensor& t, int root) override;
  std::shared_ptr<detail::PendingOp> start_p2p(const std::vector<P2POp>& ops) override;
  std::shared_ptr<detail::PendingOp> start_barrier() override;
  void on_wait_idle(const OpInfo& info) override { mpi_->answer_survey(info); }
  std::string on_timeout(const OpInfo& info, double waited_s) override;

 private:
  // Polls ncclCommGetAsyncError until the last call is no longer in progress (Error on failure
  // or after timeout_s, aborting the communicator).
  void wait_ready(const char* what);
  // Orders the communication stream after the compute stream.
  void begin();
  // Records the completion event of the op just enqueued.
  std::shared_ptr<detail::PendingOp> finish(std::vector<Tensor> keep);
  // ncclCommAbort, once (this communicator only; the process goes on and the caller throws).
  void abort_comm() noexcept;

  std::unique_ptr<MpiCommunicator> mpi_;
  int device_;
  std::shared_ptr<detail::NcclShared> nccl_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  Tensor scratch_;  // (1,) i32 on the device, for barrier
};

}  // namespace tessera::parallel
