// Communicator: collectives and point-to-point over one group of ranks ("world", "tp", "dp", "pp",
// "embedding"), with a blocking form and an _async form of every operation, a timeout that turns a
// hang into an Error naming the ranks that never arrived, and per-kind traffic statistics.
//
// Contract shared by every operation:
// - Collective over the group: every member calls the same operations in the same order (p2p
//   excepted: only the named peers take part). Tensors are contiguous by construction; reductions
//   take f32/bf16/f16/i32 (avg: floating point only), data movement takes any dtype. The backend
//   decides the device (MPI: cpu, NCCL: cuda) and says so in its Error.
// - _async returns at once; the tensors must stay untouched until the handle completes (the handle
//   keeps their storage alive). The blocking form is `_async(...).wait()`.
// - A 1-rank group short-circuits without touching the backend: sum/avg/max of one value is the
//   value, all_gather/reduce_scatter copy in to out, broadcast does nothing, p2p to rank 0 (itself)
//   pairs the k-th send with the k-th recv.
// - Each call gets the next sequence number of this communicator on this rank (op #seq in errors).
// - Timeout: wait() blocks at most timeout_s(); then the backend asks the other members over a
//   control channel which of them are blocked in this group too (members not heard from within a
//   grace period of min(1 s, timeout/4) "never arrived"), and wait() throws an Error such as
//   "collective timeout: all_reduce of 4096 f32 (16 KiB) in group 'dp' (world ranks 0,2,4,6), op
//   #17, waited 5 s; ranks that never arrived: 4". A rank that already left the operation (the root
//   of a broadcast, say) also counts as not arrived.
// - After a timeout the communicator is poisoned: every later call or wait throws "communicator
//   unusable after timeout". Its in-flight operations are abandoned: point-to-point requests are
//   cancelled/freed, collective requests (which MPI forbids cancelling) stay posted with their
//   buffers alive, and are drained for up to timeout_s() when the communicator is destroyed; one
//   still pending then is leaked on purpose rather than freed under MPI. Recovery from a truly dead
//   rank is the launch layer's business (it reports the Error and calls MPI_Abort), as in
//   torchrun/Megatron; a rank that was only late completes the abandoned operation when it arrives.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "parallel/comm_stats.h"

namespace tessera::parallel {

enum class ReduceOp : uint8_t { sum, avg, max };
// "sum", "avg", "max".
const char* reduce_op_name(ReduceOp op);

// One half of a point-to-point exchange; `peer` is a rank of the communicator's group.
struct P2POp {
  enum class Kind : uint8_t { send, recv };
  Kind kind;
  Tensor tensor;
  int peer;

  static P2POp send(Tensor t, int peer) { return {Kind::send, std::move(t), peer}; }
  static P2POp recv(Tensor t, int peer) { return {Kind::recv, std::move(t), peer}; }
};

// What an operation is, for error messages: "all_reduce of 4096 f32 (16 KiB)".
struct OpInfo {
  uint64_t seq = 0;
  CommKind kind = CommKind::barrier;
  int64_t numel = 0;  // elements of the tensor the op is named after (the full one for rs/ag)
  DType dtype = DType::f32;
  uint64_t bytes = 0;
  std::string p2p_summary;  // p2p: "send 16 KiB to 1, recv 16 KiB from 3"
  std::vector<int> peers;   // p2p: the group ranks it exchanges with
  std::string describe() const;
};

class Communicator;

namespace detail {

// A backend operation in flight.
class PendingOp {
 public:
  virtual ~PendingOp() = default;
  // Advances without blocking; returns true once the results are in the output tensors (any
  // finishing step such as avg's division has run). Throws Error on a backend failure.
  virtual bool poll() = 0;
  // Called after a timeout: release what may be released (p2p requests), keep buffers alive.
  virtual void abandon() {}
};

// Bookkeeping of one operation shared by its handle and its communicator.
struct InFlight {
  OpInfo info;
  std::shared_ptr<PendingOp> op;  // null: completed at start (short-circuit)
  Communicator* comm = nullptr;   // null once the communicator is gone
  bool done = false;
};

}  // namespace detail

// Completion handle of an _async operation. Copyable (copies share the operation). A
// default-constructed handle is complete.
class CommHandle {
 public:
  CommHandle() = default;
  // Polls once without blocking; true when complete. Never times out; throws Error if the
  // communicator is poisoned or destroyed, or on a backend failure.
  bool test();
  // Blocks until complete or the communicator's timeout (then throws Error, see the top).
  void wait();
  // True when complete (no polling).
  bool done() const { return !op_ || op_->done; }

 private:
  friend class Communicator;
  explicit CommHandle(std::shared_ptr<detail::InFlight> op) : op_(std::move(op)) {}
  std::shared_ptr<detail::InFlight> op_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // The group's name: "world", "tp", "dp", "pp", "embedding" (or a test's own).
  const std::string& name() const { return name_; }
  // World rank of each member, indexed by group rank.
  const std::vector<int>& world_ranks() const { return world_ranks_; }
  // "group 'dp' (world ranks 0,2,4,6)".
  std::string describe() const;

  double timeout_s() const { return timeout_s_; }
  // Bounds every later wait(); throws Error unless seconds > 0.
  void set_timeout(double seconds);
  // Sequence number the next operation will get (= operations issued so far).
  uint64_t next_seq() const { return next_seq_; }
  bool poisoned() const { return poisoned_; }

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = CommStats{}; }

  // t = op over the group of t, in place. i32 takes sum/max only.
  CommHandle all_reduce_async(const Tensor& t, ReduceOp op = ReduceOp::sum);
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) { all_reduce_async(t, op).wait(); }

  // out = chunk rank() of (op over the group of in); in.numel == size() * out.numel. `out` may be
  // chunk rank() of `in` itself (ZeRO's in-place shard).
  CommHandle reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::sum);
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::sum) {
    reduce_scatter_async(out, in, op).wait();
  }

  // out = concat over ranks of in; out.numel == size() * in.numel. `in` may be chunk rank() of
  // `out` itself. Conjugate of reduce_scatter.
  CommHandle all_gather_async(const Tensor& out, const Tensor& in);
  void all_gather(const Tensor& out, const Tensor& in) { all_gather_async(out, in).wait(); }

  // t = t of `root` on every member, in place.
  CommHandle broadcast_async(const Tensor& t, int root);
  void broadcast(const Tensor& t, int root) { broadcast_async(t, root).wait(); }

  // Posts every send and recv together (like ncclGroupStart/End), so a ring exchange cannot
  // deadlock. Several ops to one peer are matched in order.
  CommHandle p2p_async(const std::vector<P2POp>& ops);
  void p2p(const std::vector<P2POp>& ops) { p2p_async(ops).wait(); }

  // Completes once every member has entered it.
  CommHandle barrier_async();
  void barrier() { barrier_async().wait(); }

 protected:
  Communicator(std::string name, int rank, int size, std::vector<int> world_ranks,
               double timeout_s);

  // Throws Error unless t lives where this backend works (op and arg name the call).
  virtual void check_device(const char* op, const char* arg, const Tensor& t) const = 0;
  // Start the operation on the backend (size() > 1, arguments checked).
  virtual std::shared_ptr<detail::PendingOp> start_all_reduce(const Tensor& t, ReduceOp op) = 0;
  virtual std::shared_ptr<detail::PendingOp> start_reduce_scatter(const Tensor& out,
                                                                  const Tensor& in,
                                                                  ReduceOp op) = 0;
  virtual std::shared_ptr<detail::PendingOp> start_all_gather(const Tensor& out,
                                                              const Tensor& in) = 0;
  virtual std::shared_ptr<detail::PendingOp> start_broadcast(const Tensor& t, int root) = 0;
  virtual std::shared_ptr<detail::PendingOp> start_p2p(const std::vector<P2POp>& ops) = 0;
  virtual std::shared_ptr<detail::PendingOp> start_barrier() = 0;
  // Called between polls of a wait: answer other members' timeout surveys (may do nothing).
  virtual void on_wait_idle(const OpInfo& info) {}
  // Called once when a wait on `info` ran out of time: find the members that never arrived and
  // return "ranks that never arrived: ..." (plus what else was learned); abort the backend if it
  // can be aborted. The base class then abandons the in-flight ops, poisons and throws.
  virtual std::string on_timeout(const OpInfo& info, double waited_s) = 0;

  // Derived destructors call this first: polls each in-flight op for up to timeout_s() (errors
  // ignored), then leaks (on purpose) the ones still pending, and detaches every handle.
  void drain_in_flight() noexcept;

 private:
  friend class CommHandle;
  void check_usable() const;
  OpInfo next_op(CommKind kind, int64_t numel, DType dtype, uint64_t bytes);
  CommHandle launch(OpInfo info, std::shared_ptr<detail::PendingOp> op);
  bool test_op(detail::InFlight& f);
  void wait_op(detail::InFlight& f);
  [[noreturn]] void fail_timeout(const OpInfo& info, double waited_s);

  std::string name_;
  int rank_;
  int size_;
  std::vector<int> world_ranks_;
  double timeout_s_;
  uint64_t next_seq_ = 0;
  bool poisoned_ = false;
  std::string poison_reason_;
  CommStats stats_;
  std::vector<std::shared_ptr<detail::InFlight>> in_flight_;  // started, not known complete
  std::vector<std::shared_ptr<detail::InFlight>> abandoned_;  // in flight at a timeout
};

// x reduced over the group's ranks (x itself on one rank), sent as one f32: for losses, norms
// and other scalars every rank needs. Collective over the group.
double all_reduce_scalar(Communicator& group, double x, ReduceOp op);

// A group without a backend. With one rank (the default: a process not started by mpirun, a
// degree of 1) every operation short-circuits in the base class, so nothing communicates and no
// MPI is needed. With more, it stands for rank `rank` of a layout laid out offline (checkpoint
// conversion): rank() and size() answer, and any operation that would communicate throws Error.
// Takes tensors on any device.
class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string name, int rank = 0, int size = 1);

 protected:
  void check_device(const char*, const char*, const Tensor&) const override {}
  std::shared_ptr<detail::PendingOp> start_all_reduce(const Tensor&, ReduceOp) override;
  std::shared_ptr<detail::PendingOp> start_reduce_scatter(const Tensor&, const Tensor&,
                                                          ReduceOp) override;
  std::shared_ptr<detail::PendingOp> start_all_gather(const Tensor&, const Tensor&) override;
  std::shared_ptr<detail::PendingOp> start_broadcast(const Tensor&, int) override;
  std::shared_ptr<detail::PendingOp> start_p2p(const std::vector<P2POp>&) override;
  std::shared_ptr<detail::PendingOp> start_barrier() override;
  std::string on_timeout(const OpInfo&, double) override;
};

// Grace period of the missing-rank survey after a timeout: min(1 s, timeout / 4).
double survey_grace_s(double timeout_s);

}  // namespace tessera::parallel
