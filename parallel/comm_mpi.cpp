#include "parallel/comm_mpi.h"

#include <climits>
#include <functional>

#include "parallel/mpi_check.h"

namespace tessera::parallel {
namespace {

constexpr int kP2PTag = 11;

std::vector<int> world_ranks_of(MPI_Comm comm) {
  MPI_Group group, world;
  TS_MPI_CHECK(MPI_Comm_group(comm, &group));
  TS_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
  const int n = mpi_size(comm);
  std::vector<int> local(static_cast<size_t>(n)), out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) local[static_cast<size_t>(i)] = i;
  TS_MPI_CHECK(MPI_Group_translate_ranks(group, n, local.data(), world, out.data()));
  TS_MPI_CHECK(MPI_Group_free(&group));
  TS_MPI_CHECK(MPI_Group_free(&world));
  return out;
}

bool is_16bit_float(DType d) {
  return d == DType::bf16 || d == DType::f16;
}

// MPI type and element count that carry t's bytes unchanged.
std::pair<MPI_Datatype, int> raw_type(const Tensor& t) {
  MPI_Datatype type = MPI_BYTE;
  switch (dtype_size(t.dtype())) {
    case 4:
      type = MPI_UINT32_T;
      break;
    case 2:
      type = MPI_UINT16_T;
      break;
    case 1:
      type = MPI_BYTE;
      break;
    default:
      TS_THROW("no MPI type for ", dtype_name(t.dtype()));
  }
  TS_CHECK_LE(t.numel(), static_cast<int64_t>(INT_MAX),
              "MPI counts are int: split tensors above 2^31 - 1 elements");
  return {type, static_cast<int>(t.numel())};
}

// MPI type for a reduction buffer (f32 or i32).
MPI_Datatype reduce_type(DType d) {
  if (d == DType::f32) return MPI_FLOAT;
  if (d == DType::i32) return MPI_INT32_T;
  TS_THROW("no MPI reduction type for ", dtype_name(d));
}

MPI_Op mpi_op(ReduceOp op) {
  return op == ReduceOp::max ? MPI_MAX : MPI_SUM;
}

int count_of(const Tensor& t) {
  TS_CHECK_LE(t.numel(), static_cast<int64_t>(INT_MAX),
              "MPI counts are int: split tensors above 2^31 - 1 elements");
  return static_cast<int>(t.numel());
}

// A f32 copy of a bf16/f16 tensor.
Tensor widen(const Tensor& t) {
  Tensor out = Tensor::empty({t.numel()}, DType::f32);
  float* o = out.data<float>();
  if (t.dtype() == DType::bf16) {
    const bf16* p = t.data<bf16>();
    for (int64_t i = 0; i < t.numel(); ++i) o[i] = to_float(p[i]);
  } else {
    const f16* p = t.data<f16>();
    for (int64_t i = 0; i < t.numel(); ++i) o[i] = to_float(p[i]);
  }
  return out;
}

// dst (bf16/f16) = round(src (f32)).
void narrow_into(const Tensor& dst, const Tensor& src) {
  const float* s = src.data<float>();
  if (dst.dtype() == DType::bf16) {
    bf16* d = dst.data<bf16>();
    for (int64_t i = 0; i < dst.numel(); ++i) d[i] = to_bf16(s[i]);
  } else {
    f16* d = dst.data<f16>();
    for (int64_t i = 0; i < dst.numel(); ++i) d[i] = to_f16(s[i]);
  }
}

void divide(const Tensor& t, int n) {
  float* p = t.data<float>();
  const float d = static_cast<float>(n);
  for (int64_t i = 0; i < t.numel(); ++i) p[i] /= d;
}

// True when the byte ranges of a and b intersect.
bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.storage() != b.storage()) return false;
  const size_t a0 = a.byte_offset(), b0 = b.byte_offset();
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// Requests of one operation, the tensors they use, and a finishing step run once on completion.
class MpiOp final : public detail::PendingOp {
 public:
  explicit MpiOp(bool collective) : collective_(collective) {}

  MPI_Request* add(bool is_recv) {
    requests_.push_back(MPI_REQUEST_NULL);
    is_recv_.push_back(is_recv);
    return &requests_.back();
  }
  void reserve(size_t n) {
    requests_.reserve(n);
    is_recv_.reserve(n);
  }
  void keep(Tensor t) { keep_.push_back(std::move(t)); }
  void on_finish(std::function<void()> f) { finish_ = std::move(f); }

  bool poll() override {
    int done = 0;
    TS_MPI_CHECK(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done,
                             MPI_STATUSES_IGNORE));
    if (done && finish_) {
      auto f = std::move(finish_);
      finish_ = nullptr;
      f();
    }
    return done != 0;
  }

  void abandon() override {
    finish_ = nullptr;        // the results are not wanted any more
    if (collective_) return;  // MPI forbids cancelling collectives: drained at destruction
    for (size_t i = 0; i < requests_.size(); ++i) {
      if (requests_[i] == MPI_REQUEST_NULL) continue;
      if (is_recv_[i]) MPI_Cancel(&requests_[i]);
      MPI_Request_free(&requests_[i]);  // never block on a dead peer; keep_ holds the buffers
    }
  }

 private:
  bool collective_;
  std::vector<MPI_Request> requests_;
  std::vector<bool> is_recv_;
  std::vector<Tensor> keep_;
  std::function<void()> finish_;
};

}  // namespace

int mpi_rank(MPI_Comm comm) {
  int r = 0;
  TS_MPI_CHECK(MPI_Comm_rank(comm, &r));
  return r;
}

int mpi_size(MPI_Comm comm) {
  int n = 0;
  TS_MPI_CHECK(MPI_Comm_size(comm, &n));
  return n;
}

MpiCommunicator::Dup MpiCommunicator::duplicate(MPI_Comm comm) {
  Dup d{MPI_COMM_NULL, MPI_COMM_NULL};
  TS_MPI_CHECK(MPI_Comm_dup(comm, &d.data));
  TS_MPI_CHECK(MPI_Comm_dup(comm, &d.control));
  TS_MPI_CHECK(MPI_Comm_set_errhandler(d.data, MPI_ERRORS_RETURN));
  TS_MPI_CHECK(MPI_Comm_set_errhandler(d.control, MPI_ERRORS_RETURN));
  return d;
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, double timeout_s)
    : MpiCommunicator(duplicate(comm), std::move(name), timeout_s) {}

MpiCommunicator::MpiCommunicator(Dup dup, std::string name, double timeout_s)
    : Communicator(std::move(name), mpi_rank(dup.data), mpi_size(dup.data),
                   world_ranks_of(dup.data), timeout_s),
      data_(dup.data),
      control_comm_(dup.control),
      control_(std::make_unique<ControlChannel>(dup.control)) {}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(MPI_Comm parent, int color, int key,
                                                        std::string name, double timeout_s) {
  MPI_Comm part = MPI_COMM_NULL;
  TS_MPI_CHECK(MPI_Comm_split(parent, color, key, &part));
  if (part == MPI_COMM_NULL) return nullptr;
  std::unique_ptr<MpiCommunicator> comm;
  try {
    comm = std::make_unique<MpiCommunicator>(part, std::move(name), timeout_s);
  } catch (...) {
    MPI_Comm_free(&part);
    throw;
  }
  TS_MPI_CHECK(MPI_Comm_free(&part));
  return comm;
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // too late to touch MPI: everything is gone with it
  drain_in_flight();
  control_->drain();
  control_.reset();
  MPI_Comm_free(&control_comm_);
  MPI_Comm_free(&data_);
}

std::string MpiCommunicator::survey_after_timeout(const OpInfo& info) {
  std::vector<int> members = info.peers;
  if (info.kind != CommKind::p2p) {
    members.clear();
    for (int r = 0; r < size(); ++r) members.push_back(r);
  }
  const auto reports = control_->survey(info.seq, info.kind, members, survey_grace_s(timeout_s()));
  return diagnose_survey(reports, members, world_ranks(), rank(), info.seq, info.kind);
}

std::string MpiCommunicator::on_timeout(const OpInfo& info, double) {
  return survey_after_timeout(info);
}

void MpiCommunicator::check_device(const char* op, const char* arg, const Tensor& t) const {
  TS_CHECK(t.is_cpu(), op, " in MPI communicator '", name(), "': ", arg, " is on ",
           t.device().str(), "; the MPI backend takes cpu tensors (use the NCCL context for CUDA)");
}

std::shared_ptr<detail::PendingOp> MpiCommunicator::start_all_reduce(const Tensor& t, ReduceOp op) {
  auto mop = std::make_shared<MpiOp>(true);
  const bool staged = is_16bit_float(t.dtype());
  Tensor buf = staged ? widen(t) : t;
  mop->keep(t);
  mop->keep(buf);
  TS_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf.raw(), count_of(buf), reduce_type(buf.dtype()),
                              mpi_op(op), data_, mop->add(false)));
  const int n = size();
  if (op == ReduceOp::avg || staged) {
    mop->on_finish([t, buf, op, staged, n] {
      if (op == ReduceOp::avg) divide(buf, n);
      if (staged) narrow_into(t, buf);
    });
  }
  return mop;
}

std::shared_ptr<detail::PendingOp> MpiCommunicator::start_reduce_scatter(const Tensor& out,
                                                                         const Tensor& in,
                                                                         ReduceOp op) {
  auto mop = std::make_shared<MpiOp>(true);
  const bool staged = is_16bit_float(in.dtype());
  const DType wire = staged ? DType::f32 : in.dtype();
  Tensor src = staged ? widen(in) : in;
  // Through a separate result buffer when out must be converted or lies inside in.
  const bool direct = !staged && !overlaps(out, in);
  Tensor dst = direct ? out : Tensor::empty({out.numel()}, wire);
  mop->keep(out);
  mop->keep(in);
  mop->keep(src);
  mop->keep(dst);
  TS_MPI_CHECK(MPI_Ireduce_scatter_block(src.raw(), dst.raw(), count_of(out), reduce_type(wire),
                                         mpi_op(op), data_, mop->add(false)));
  const int n = size();
  if (op == ReduceOp::avg || !direct) {
    mop->on_finish([out, dst, op, staged, direct, n] {
      if (op == ReduceOp::avg) divide(dst, n);
      if (staged) {
        narrow_into(out, dst);
      } else if (!direct) {
        Tensor o = out;
        o.copy_from(dst);
      }
    });
  }
  return mop;
}

std::shared_ptr<detail::PendingOp> MpiCommunicator::start_all_gather(const Tensor& out,
                                                                     const Tensor& in) {
  auto mop = std::make_shared<MpiOp>(true);
  const bool in_place =
      in.storage() == out.storage() && in.byte_offset() == out.byte_offset() + rank() * in.nbytes();
  TS_CHECK(in_place || !overlaps(out, in), "all_gather in ", describe(),
           ": in overlaps out but is not chunk ", rank(), " of it");
  mop->keep(out);
  mop->keep(in);
  const auto [type, count] = raw_type(in);
  TS_MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : in.raw(), count, type, out.raw(), count,
                              type, data_, mop->add(false)));
  return mop;
}

std::shared_ptr<detail::PendingOp> MpiCommunicator::start_broadcast(const Tensor& t, int root) {
  auto mop = std::make_shared<MpiOp>(true);
  mop->keep(t);
  const auto [type, count] = raw_type(t);
  TS_MPI_CHECK(MPI_Ibcast(t.raw(), count, type, root, data_, mop->add(false)));
  return mop;
}

std::shared_ptr<detail::PendingOp> MpiCommunicator::start_p2p(const std::vector<P2POp>& ops) {
  auto mop = std::make_shared<MpiOp>(false);
  mop->reserve(ops.size());
  // Receives first, so that a peer's eager sends land in posted buffers.
  for (const bool recv_pass : {true, false}) {
    for (const P2POp& p : ops) {
      const bool is_recv = p.kind == P2POp::Kind::recv;
      if (is_recv != recv_pass) continue;
      mop->keep(p.tensor);
      const auto [type, count] = raw_type(p.tensor);
      if (is_recv) {
        TS_MPI_CHECK(
            MPI_Irecv(p.tensor.raw(), count, type, p.peer, kP2PTag, data_, mop->add(true)));
      } else {
        TS_MPI_CHECK(
            MPI_Isend(p.tensor.raw(), count, type, p.peer, kP2PTag, data_, mop->add(false)));
      }
    }
  }
  return mop;
}

std::shared_ptr<detail::PendingOp> MpiCommunicator::start_barrier() {
  auto mop = std::make_shared<MpiOp>(true);
  TS_MPI_CHECK(MPI_Ibarrier(data_, mop->add(false)));
  return mop;
}

}  // namespace tessera::parallel
