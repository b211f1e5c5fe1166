#include "parallel/comm_nccl.h"

#include <chrono>
#include <cstring>
#include <thread>

#include "core/cuda_check.h"
#include "parallel/nccl_check.h"

namespace tessera::parallel {
namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::f32:
      return ncclFloat32;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i32:
      return ncclInt32;
    default:
      TS_THROW("no NCCL reduction type for ", dtype_name(d));
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::avg:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
  }
  TS_THROW("unknown ReduceOp ", static_cast<int>(op));
}

// Completion of one op: its event on the communication stream, and the tensors it uses.
class NcclOp final : public detail::PendingOp {
 public:
  NcclOp(std::shared_ptr<detail::NcclShared> shared, cudaEvent_t done, std::vector<Tensor> keep)
      : shared_(std::move(shared)), done_(done), keep_(std::move(keep)) {}
  ~NcclOp() override { cudaEventDestroy(done_); }

  bool poll() override {
    const cudaError_t e = cudaEventQuery(done_);
    if (e == cudaSuccess) return true;
    if (e != cudaErrorNotReady) TS_CUDA_CHECK(e);
    if (!shared_->aborted) {
      ncclResult_t state = ncclSuccess;
      TS_NCCL_CHECK(ncclCommGetAsyncError(shared_->comm, &state));
      TS_NCCL_CHECK(state);
    }
    return false;
  }

 private:
  std::shared_ptr<detail::NcclShared> shared_;
  cudaEvent_t done_;
  std::vector<Tensor> keep_;
};

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi, int device,
                                   double timeout_s)
    : Communicator(mpi->name(), mpi->rank(), mpi->size(), mpi->world_ranks(), timeout_s),
      mpi_(std::move(mpi)),
      device_(device),
      nccl_(std::make_shared<detail::NcclShared>()) {
  TS_CUDA_CHECK(cudaSetDevice(device_));
  TS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  TS_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  scratch_ = Tensor::zeros({1}, DType::i32, Device::cuda(device_));

  // The unique id travels over the MPI communicator of the same group (with its timeout).
  ncclUniqueId id;
  Tensor id_bytes = Tensor::empty({static_cast<int64_t>(sizeof id)}, DType::u8);
  if (rank() == 0) {
    TS_NCCL_CHECK(ncclGetUniqueId(&id));
    std::memcpy(id_bytes.raw(), &id, sizeof id);
  }
  mpi_->set_timeout(timeout_s);
  mpi_->broadcast(id_bytes, 0);
  std::memcpy(&id, id_bytes.raw(), sizeof id);

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  TS_NCCL_CHECK(ncclCommInitRankConfig(&nccl_->comm, size(), id, rank(), &config));
  wait_ready("ncclCommInitRankConfig");
}

NcclCommunicator::~NcclCommunicator() {
  drain_in_flight();
  try {
    if (!nccl_->aborted && nccl_->comm) {
      TS_NCCL_CHECK(ncclCommFinalize(nccl_->comm));
      wait_ready("ncclCommFinalize");
      ncclCommDestroy(nccl_->comm);
    }
  } catch (const Error&) {
    abort_comm();  // wait_ready already aborted on a timeout; abort_comm() is idempotent
  }
  if (ready_) cudaEventDestroy(ready_);
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::abort_comm() noexcept {
  if (nccl_->aborted || !nccl_->comm) return;
  ncclCommAbort(nccl_->comm);
  nccl_->aborted = true;
}

void NcclCommunicator::wait_ready(const char* what) {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(timeout_s()));
  ncclResult_t state = ncclInProgress;
  while (true) {
    TS_NCCL_CHECK(ncclCommGetAsyncError(nccl_->comm, &state));
    if (state != ncclInProgress) break;
    if (Clock::now() >= deadline) {
      abort_comm();
      TS_THROW("NCCL timeout: ", what, " in ", describe(), " still in progress after ", timeout_s(),
               " s (ncclCommAbort called): a member never arrived?");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  if (state != ncclSuccess) abort_comm();
  TS_NCCL_CHECK(state);
}

void NcclCommunicator::begin() {
  TS_CHECK(!nccl_->aborted, "communicator unusable after timeout: the NCCL communicator of ",
           describe(), " was aborted");
  TS_CUDA_CHECK(cudaSetDevice(device_));
  TS_CUDA_CHECK(cudaEventRecord(ready_, compute_));
  TS_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
}

std::shared_ptr<detail::PendingOp> NcclCommunicator::finish(std::vector<Tensor> keep) {
  cudaEvent_t done = nullptr;
  TS_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  const cudaError_t e = cudaEventRecord(done, stream_);
  if (e != cudaSuccess) cudaEventDestroy(done);
  TS_CUDA_CHECK(e);
  return std::make_shared<NcclOp>(nccl_, done, std::move(keep));
}

std::string NcclCommunicator::on_timeout(const OpInfo& info, double) {
  std::string diagnosis = mpi_->survey_after_timeout(info);
  abort_comm();
  return diagnosis + " (ncclCommAbort called)";
}

void NcclCommunicator::check_device(const char* op, const char* arg, const Tensor& t) const {
  TS_CHECK(t.device() == Device::cuda(device_), op, " in NCCL communicator '", name(), "': ", arg,
           " is on ", t.device().str(), "; this communicator works on cuda:", device_);
}

std::shared_ptr<detail::PendingOp> NcclCommunicator::start_all_reduce(const Tensor& t,
                                                                      ReduceOp op) {
  begin();
  TS_NCCL_CHECK(ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()),
                              nccl_type(t.dtype()), nccl_op(op), nccl_->comm, stream_));
  wait_ready("ncclAllReduce");
  return finish({t});
}

std::shared_ptr<detail::PendingOp> NcclCommunicator::start_reduce_scatter(const Tensor& out,
                                                                          const Tensor& in,
                                                                          ReduceOp op) {
  begin();
  TS_NCCL_CHECK(ncclReduceScatter(in.raw(), out.raw(), static_cast<size_t>(out.numel()),
                                  nccl_type(in.dtype()), nccl_op(op), nccl_->comm, stream_));
  wait_ready("ncclReduceScatter");
  return finish({out, in});
}

std::shared_ptr<detail::PendingOp> NcclCommunicator::start_all_gather(const Tensor& out,
                                                                      const Tensor& in) {
  begin();
  TS_NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), in.nbytes(), ncclUint8, nccl_->comm, stream_));
  wait_ready("ncclAllGather");
  return finish({out, in});
}

std::shared_ptr<detail::PendingOp> NcclCommunicator::start_broadcast(const Tensor& t, int root) {
  begin();
  TS_NCCL_CHECK(ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, nccl_->comm, stream_));
  wait_ready("ncclBroadcast");
  return finish({t});
}

std::shared_ptr<detail::PendingOp> NcclCommunicator::start_p2p(const std::vector<P2POp>& ops) {
  begin();
  std::vector<Tensor> keep;
  TS_NCCL_CHECK(ncclGroupStart());
  for (const P2POp& p : ops) {
    keep.push_back(p.tensor);
    if (p.kind == P2POp::Kind::send) {
      TS_NCCL_CHECK(
          ncclSend(p.tensor.raw(), p.tensor.nbytes(), ncclUint8, p.peer, nccl_->comm, stream_));
    } else {
      TS_NCCL_CHECK(
          ncclRecv(p.tensor.raw(), p.tensor.nbytes(), ncclUint8, p.peer, nccl_->comm, stream_));
    }
  }
  TS_NCCL_CHECK(ncclGroupEnd());
  wait_ready("ncclGroupEnd (p2p)");
  return finish(std::move(keep));
}

std::shared_ptr<detail::PendingOp> NcclCommunicator::start_barrier() {
  // NCCL has no barrier: an all-reduce of one int completes only when every member joined.
  begin();
  TS_NCCL_CHECK(
      ncclAllReduce(scratch_.raw(), scratch_.raw(), 1, ncclInt32, ncclSum, nccl_->comm, stream_));
  wait_ready("ncclAllReduce (barrier)");
  return finish({});
}

}  // namespace tessera::parallel
