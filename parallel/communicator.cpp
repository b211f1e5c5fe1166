#include "parallel/communicator.h"

#include <algorithm>
#include <cstdio>
#include <thread>

namespace tessera::parallel {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", s);
  return buf;
}

void require_defined(const char* op, const char* arg, const Tensor& t) {
  TS_CHECK(t.defined(), op, ": ", arg, " is an undefined tensor");
}

void require_reducible(const char* op, const char* arg, const Tensor& t, ReduceOp rop) {
  const DType d = t.dtype();
  TS_CHECK(d == DType::f32 || d == DType::bf16 || d == DType::f16 || d == DType::i32, op, ": ", arg,
           " holds ", dtype_name(d), "; reductions take f32, bf16, f16 or i32");
  TS_CHECK(!(rop == ReduceOp::avg && d == DType::i32), op, ": avg of ", arg,
           " (i32) is not defined: use sum and divide");
}

// Pauses between polls: a few yields first (latency), then sleeps growing to 1 ms (so that
// oversubscribed ranks and the compute threads keep their cores).
class Backoff {
 public:
  void pause(Clock::time_point deadline) {
    if (spins_ < 64) {
      ++spins_;
      std::this_thread::yield();
      return;
    }
    const auto left = deadline - Clock::now();
    if (left > std::chrono::microseconds(0)) {
      std::this_thread::sleep_for(std::min<Clock::duration>(sleep_, left));
    }
    sleep_ = std::min<Clock::duration>(sleep_ * 2, std::chrono::milliseconds(1));
  }

 private:
  int spins_ = 0;
  Clock::duration sleep_ = std::chrono::microseconds(20);
};

}  // namespace

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
  }
  TS_THROW("unknown ReduceOp ", static_cast<int>(op));
}

double survey_grace_s(double timeout_s) {
  return std::min(1.0, timeout_s / 4.0);
}

std::string OpInfo::describe() const {
  if (kind == CommKind::barrier) return "barrier";
  if (kind == CommKind::p2p) return "p2p (" + p2p_summary + ")";
  return ::tessera::detail::cat(comm_kind_name(kind), " of ", numel, " ", dtype_name(dtype), " (",
                                format_bytes(static_cast<double>(bytes)), ")");
}

// ---- handles ------------------------------------------------------------------------------------

bool CommHandle::test() {
  if (done()) return true;
  TS_CHECK(op_->comm != nullptr, "test() on a handle of op #", op_->info.seq, " (",
           op_->info.describe(), ") whose communicator was destroyed");
  return op_->comm->test_op(*op_);
}

void CommHandle::wait() {
  if (done()) return;
  TS_CHECK(op_->comm != nullptr, "wait() on a handle of op #", op_->info.seq, " (",
           op_->info.describe(), ") whose communicator was destroyed");
  op_->comm->wait_op(*op_);
}

// ---- communicator -------------------------------------------------------------------------------

Communicator::Communicator(std::string name, int rank, int size, std::vector<int> world_ranks,
                           double timeout_s)
    : name_(std::move(name)),
      rank_(rank),
      size_(size),
      world_ranks_(std::move(world_ranks)),
      timeout_s_(timeout_s) {
  TS_CHECK_GE(size_, 1, "communicator '", name_, "' size");
  TS_CHECK(rank_ >= 0 && rank_ < size_, "communicator '", name_, "': rank ", rank_, " outside [0, ",
           size_, ")");
  TS_CHECK_EQ(world_ranks_.size(), static_cast<size_t>(size_), "communicator '", name_,
              "': one world rank per member");
  set_timeout(timeout_s);
}

std::string Communicator::describe() const {
  std::string ranks;
  for (size_t i = 0; i < world_ranks_.size(); ++i) {
    if (i) ranks += ",";
    ranks += std::to_string(world_ranks_[i]);
  }
  return "group '" + name_ + "' (world ranks " + ranks + ")";
}

void Communicator::set_timeout(double seconds) {
  TS_CHECK(seconds > 0, "communicator '", name_, "': timeout must be > 0 seconds, got ", seconds);
  timeout_s_ = seconds;
}

void Communicator::check_usable() const {
  TS_CHECK(!poisoned_, "communicator unusable after timeout: ", poison_reason_,
           "; create the communicators again (or let the launcher abort the job)");
}

OpInfo Communicator::next_op(CommKind kind, int64_t numel, DType dtype, uint64_t bytes) {
  OpInfo info;
  info.seq = next_seq_++;
  info.kind = kind;
  info.numel = numel;
  info.dtype = dtype;
  info.bytes = bytes;
  stats_.record(kind, size_, bytes);
  return info;
}

CommHandle Communicator::launch(OpInfo info, std::shared_ptr<detail::PendingOp> op) {
  // Forget what has completed; handles keep their own reference.
  std::erase_if(in_flight_, [](const auto& f) { return f->done; });
  auto f = std::make_shared<detail::InFlight>();
  f->info = std::move(info);
  f->op = std::move(op);
  f->comm = this;
  in_flight_.push_back(f);
  return CommHandle(std::move(f));
}

bool Communicator::test_op(detail::InFlight& f) {
  if (f.done) return true;
  check_usable();
  bool complete = false;
  try {
    complete = f.op->poll();
  } catch (const Error& e) {
    poisoned_ = true;
    poison_reason_ = describe() + " failed at op #" + std::to_string(f.info.seq) + " (" +
                     f.info.describe() + "): " + e.message();
    throw;
  }
  if (complete) f.done = true;
  return complete;
}

void Communicator::wait_op(detail::InFlight& f) {
  if (f.done) return;
  check_usable();
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(timeout_s_));
  Backoff backoff;
  while (!test_op(f)) {
    on_wait_idle(f.info);
    if (Clock::now() >= deadline) fail_timeout(f.info, seconds_since(start));
    backoff.pause(deadline);
  }
}

void Communicator::fail_timeout(const OpInfo& info, double waited_s) {
  std::string diagnosis;
  try {
    diagnosis = on_timeout(info, waited_s);
  } catch (const Error& e) {
    diagnosis = "could not ask the other ranks: " + e.message();
  }
  for (auto& f : in_flight_) {
    if (f->done) continue;
    try {
      f->op->abandon();
    } catch (const Error&) {
      // Best effort: the communicator is poisoned either way.
    }
    abandoned_.push_back(f);
  }
  in_flight_.clear();
  const char* what = info.kind == CommKind::p2p ? "p2p timeout: " : "collective timeout: ";
  const std::string message =
      ::tessera::detail::cat(what, info.describe(), " in ", describe(), ", op #", info.seq,
                             ", waited ", format_seconds(waited_s), "; ", diagnosis);
  poisoned_ = true;
  poison_reason_ =
      describe() + " timed out at op #" + std::to_string(info.seq) + " (" + info.describe() + ")";
  TS_THROW(message);
}

void Communicator::drain_in_flight() noexcept {
  std::vector<std::shared_ptr<detail::InFlight>> pending;
  for (auto* list : {&in_flight_, &abandoned_}) {
    for (auto& f : *list) {
      if (!f->done) pending.push_back(f);
    }
  }
  const auto start = Clock::now();
  Backoff backoff;
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(timeout_s_));
  while (!pending.empty()) {
    std::erase_if(pending, [](const auto& f) {
      try {
        if (f->op->poll()) f->done = true;
      } catch (...) {
        f->done = true;  // failed: nothing more will happen to it
      }
      return f->done;
    });
    if (pending.empty() || Clock::now() >= deadline) break;
    backoff.pause(deadline);
  }
  for (auto& f : pending) {
    // Still posted on the backend, which may write into its buffers later: keep them alive.
    (void)new std::shared_ptr<detail::PendingOp>(f->op);
  }
  for (auto* list : {&in_flight_, &abandoned_}) {
    for (auto& f : *list) f->comm = nullptr;
    list->clear();
  }
}

// ---- operations ---------------------------------------------------------------------------------

CommHandle Communicator::all_reduce_async(const Tensor& t, ReduceOp op) {
  check_usable();
  require_defined("all_reduce", "t", t);
  require_reducible("all_reduce", "t", t, op);
  check_device("all_reduce", "t", t);
  OpInfo info = next_op(CommKind::all_reduce, t.numel(), t.dtype(), t.nbytes());
  if (size_ == 1 || t.numel() == 0) return CommHandle();
  return launch(std::move(info), start_all_reduce(t, op));
}

CommHandle Communicator::reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op) {
  check_usable();
  require_defined("reduce_scatter", "out", out);
  require_defined("reduce_scatter", "in", in);
  require_reducible("reduce_scatter", "in", in, op);
  TS_CHECK(out.dtype() == in.dtype(), "reduce_scatter: out holds ", dtype_name(out.dtype()),
           " but in holds ", dtype_name(in.dtype()));
  TS_CHECK(in.numel() == size_ * out.numel(), "reduce_scatter in ", describe(), ": in has ",
           in.numel(), " elements, expected size ", size_, " x out ", out.numel(), " = ",
           size_ * out.numel());
  check_device("reduce_scatter", "out", out);
  check_device("reduce_scatter", "in", in);
  OpInfo info = next_op(CommKind::reduce_scatter, in.numel(), in.dtype(), in.nbytes());
  if (size_ == 1) {
    Tensor dst = out;
    if (dst.raw() != in.raw()) dst.copy_from(in);
    return CommHandle();
  }
  if (out.numel() == 0) return CommHandle();
  return launch(std::move(info), start_reduce_scatter(out, in, op));
}

CommHandle Communicator::all_gather_async(const Tensor& out, const Tensor& in) {
  check_usable();
  require_defined("all_gather", "out", out);
  require_defined("all_gather", "in", in);
  TS_CHECK(out.dtype() == in.dtype(), "all_gather: out holds ", dtype_name(out.dtype()),
           " but in holds ", dtype_name(in.dtype()));
  TS_CHECK(out.numel() == size_ * in.numel(), "all_gather in ", describe(), ": out has ",
           out.numel(), " elements, expected size ", size_, " x in ", in.numel(), " = ",
           size_ * in.numel());
  check_device("all_gather", "out", out);
  check_device("all_gather", "in", in);
  OpInfo info = next_op(CommKind::all_gather, out.numel(), out.dtype(), out.nbytes());
  if (size_ == 1) {
    Tensor dst = out;
    if (dst.raw() != in.raw()) dst.copy_from(in);
    return CommHandle();
  }
  if (in.numel() == 0) return CommHandle();
  return launch(std::move(info), start_all_gather(out, in));
}

CommHandle Communicator::broadcast_async(const Tensor& t, int root) {
  check_usable();
  require_defined("broadcast", "t", t);
  TS_CHECK(root >= 0 && root < size_, "broadcast in ", describe(), ": root ", root, " outside [0, ",
           size_, ")");
  check_device("broadcast", "t", t);
  OpInfo info = next_op(CommKind::broadcast, t.numel(), t.dtype(), t.nbytes());
  if (size_ == 1 || t.numel() == 0) return CommHandle();
  return launch(std::move(info), start_broadcast(t, root));
}

CommHandle Communicator::p2p_async(const std::vector<P2POp>& ops) {
  check_usable();
  uint64_t sent = 0;
  std::string summary;
  for (const P2POp& p : ops) {
    const bool is_send = p.kind == P2POp::Kind::send;
    require_defined("p2p", is_send ? "a send tensor" : "a recv tensor", p.tensor);
    TS_CHECK(p.peer >= 0 && p.peer < size_, "p2p in ", describe(), ": peer ", p.peer,
             " outside [0, ", size_, ")");
    check_device("p2p", is_send ? "a send tensor" : "a recv tensor", p.tensor);
    if (is_send) sent += p.tensor.nbytes();
    if (!summary.empty()) summary += ", ";
    summary += ::tessera::detail::cat(is_send ? "send " : "recv ",
                                      format_bytes(static_cast<double>(p.tensor.nbytes())),
                                      is_send ? " to " : " from ", p.peer);
  }
  OpInfo info = next_op(CommKind::p2p, 0, DType::u8, sent);
  info.p2p_summary = summary.empty() ? "nothing" : summary;
  for (const P2POp& p : ops) {
    if (std::find(info.peers.begin(), info.peers.end(), p.peer) == info.peers.end()) {
      info.peers.push_back(p.peer);
    }
  }
  if (ops.empty()) return CommHandle();
  if (size_ == 1) {
    // Every peer is this rank: the k-th send feeds the k-th recv.
    std::vector<const P2POp*> sends, recvs;
    for (const P2POp& p : ops) (p.kind == P2POp::Kind::send ? sends : recvs).push_back(&p);
    TS_CHECK_EQ(sends.size(), recvs.size(), "p2p in a 1-rank ", describe(),
                ": sends and recvs to itself must pair up");
    for (size_t k = 0; k < sends.size(); ++k) {
      TS_CHECK_EQ(sends[k]->tensor.nbytes(), recvs[k]->tensor.nbytes(), "p2p to itself: send ", k,
                  " and recv ", k, " differ in bytes");
      Tensor dst = recvs[k]->tensor;
      dst.copy_from(sends[k]->tensor);
    }
    return CommHandle();
  }
  return launch(std::move(info), start_p2p(ops));
}

CommHandle Communicator::barrier_async() {
  check_usable();
  OpInfo info = next_op(CommKind::barrier, 0, DType::u8, 0);
  if (size_ == 1) return CommHandle();
  return launch(std::move(info), start_barrier());
}

double all_reduce_scalar(Communicator& group, double x, ReduceOp op) {
  if (group.size() == 1) return x;
  Tensor t = Tensor::empty({1}, DType::f32);
  t.data<float>()[0] = static_cast<float>(x);
  group.all_reduce(t, op);
  return t.data<float>()[0];
}

namespace {

std::vector<int> iota_ranks(int size) {
  std::vector<int> r(static_cast<size_t>(std::max(size, 1)));
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<int>(i);
  return r;
}

[[noreturn]] void no_backend(const std::string& name) {
  TS_THROW("communicator '", name, "' has no backend (a rank of a layout computed offline): it ",
           "cannot communicate");
}

}  // namespace

LocalCommunicator::LocalCommunicator(std::string name, int rank, int size)
    : Communicator(std::move(name), rank, size, iota_ranks(size), 300.0) {}

std::shared_ptr<detail::PendingOp> LocalCommunicator::start_all_reduce(const Tensor&, ReduceOp) {
  no_backend(name());
}
std::shared_ptr<detail::PendingOp> LocalCommunicator::start_reduce_scatter(const Tensor&,
                                                                           const Tensor&,
                                                                           ReduceOp) {
  no_backend(name());
}
std::shared_ptr<detail::PendingOp> LocalCommunicator::start_all_gather(const Tensor&,
                                                                       const Tensor&) {
  no_backend(name());
}
std::shared_ptr<detail::PendingOp> LocalCommunicator::start_broadcast(const Tensor&, int) {
  no_backend(name());
}
std::shared_ptr<detail::PendingOp> LocalCommunicator::start_p2p(const std::vector<P2POp>&) {
  no_backend(name());
}
std::shared_ptr<detail::PendingOp> LocalCommunicator::start_barrier() {
  no_backend(name());
}
std::string LocalCommunicator::on_timeout(const OpInfo&, double) {
  no_backend(name());
}

}  // namespace tessera::parallel
