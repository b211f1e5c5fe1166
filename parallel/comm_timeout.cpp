#include "parallel/comm_timeout.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "parallel/mpi_check.h"

namespace tessera::parallel {
namespace {

constexpr int kControlTag = 7;
constexpr int64_t kAnnounce = 1;  // "I timed out at op #seq"
constexpr int64_t kAnswer = 2;    // "I am waiting at op #seq"

}  // namespace

ControlChannel::ControlChannel(MPI_Comm comm) : comm_(comm) {
  TS_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  TS_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  gave_up_.resize(static_cast<size_t>(size_));
}

ControlChannel::~ControlChannel() {
  for (Send& s : sends_) {
    int done = 0;
    MPI_Test(&s.request, &done, MPI_STATUS_IGNORE);
    if (!done) {
      MPI_Request_free(&s.request);  // never block on a dead peer
      (void)s.buffer.release();      // MPI may still read it
    }
  }
}

void ControlChannel::post(int dest, const Message& msg) {
  reap();
  Send s{std::make_unique<Message>(msg), MPI_REQUEST_NULL};
  TS_MPI_CHECK(MPI_Isend(s.buffer->data(), 3, MPI_INT64_T, dest, kControlTag, comm_, &s.request));
  sends_.push_back(std::move(s));
}

void ControlChannel::reap() {
  std::erase_if(sends_, [](Send& s) {
    int done = 0;
    TS_MPI_CHECK(MPI_Test(&s.request, &done, MPI_STATUS_IGNORE));
    return done != 0;
  });
}

bool ControlChannel::receive(Message& msg, int& source) {
  int arrived = 0;
  MPI_Status status;
  TS_MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kControlTag, comm_, &arrived, &status));
  if (!arrived) return false;
  TS_MPI_CHECK(MPI_Recv(msg.data(), 3, MPI_INT64_T, status.MPI_SOURCE, kControlTag, comm_,
                        MPI_STATUS_IGNORE));
  source = status.MPI_SOURCE;
  return true;
}

void ControlChannel::answer(uint64_t seq, CommKind kind) {
  Message msg;
  int source = 0;
  while (receive(msg, source)) {
    if (msg[0] == kAnnounce) {
      gave_up_[static_cast<size_t>(source)] = {true, true, static_cast<uint64_t>(msg[1]),
                                               static_cast<CommKind>(msg[2])};
      post(source, {kAnswer, static_cast<int64_t>(seq), static_cast<int64_t>(kind)});
    }
  }
}

std::vector<PeerReport> ControlChannel::survey(uint64_t seq, CommKind kind,
                                               const std::vector<int>& members, double grace_s) {
  // Peers that gave up while this rank was still waiting arrived (and left): they stopped
  // listening, so they will not answer now.
  std::vector<PeerReport> reports = gave_up_;
  reports[static_cast<size_t>(rank_)] = {true, true, seq, kind};
  int expected = 0;
  for (int m : members) {
    if (m == rank_ || reports[static_cast<size_t>(m)].heard) continue;
    post(m, {kAnnounce, static_cast<int64_t>(seq), static_cast<int64_t>(kind)});
    ++expected;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  int heard = 0;
  while (heard < expected && std::chrono::steady_clock::now() < deadline) {
    Message msg;
    int source = 0;
    if (!receive(msg, source)) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    PeerReport& r = reports[static_cast<size_t>(source)];
    const bool member = std::find(members.begin(), members.end(), source) != members.end();
    if (!r.heard && member) ++heard;
    r = {true, msg[0] == kAnnounce, static_cast<uint64_t>(msg[1]), static_cast<CommKind>(msg[2])};
    if (msg[0] == kAnnounce) gave_up_[static_cast<size_t>(source)] = r;
  }
  reap();
  return reports;
}

void ControlChannel::drain() {
  Message msg;
  int source = 0;
  try {
    while (receive(msg, source)) {
    }
    reap();
  } catch (const Error&) {
    // Best effort on the way out.
  }
}

std::string diagnose_survey(const std::vector<PeerReport>& reports, const std::vector<int>& members,
                            const std::vector<int>& world_ranks, int self, uint64_t seq,
                            CommKind kind) {
  std::string missing;
  std::string elsewhere;
  for (int m : members) {
    if (m == self) continue;
    const PeerReport& r = reports.at(static_cast<size_t>(m));
    const int world = world_ranks.at(static_cast<size_t>(m));
    if (!r.heard) {
      if (!missing.empty()) missing += ",";
      missing += std::to_string(world);
    } else if (r.seq != seq || r.kind != kind) {
      // Ahead is normal asynchrony (its part of the earlier ops finished); the same op number
      // with another kind means the ranks issue their calls in different orders.
      const char* note = r.seq > seq   ? " (ahead: its part of the earlier ops finished)"
                         : r.seq < seq ? " (behind)"
                                       : " (calls out of order?)";
      elsewhere += ::tessera::detail::cat(elsewhere.empty() ? "" : "; ", "world rank ", world,
                                          " is at op #", r.seq, " ", comm_kind_name(r.kind), note);
    }
  }
  if (missing.empty() && elsewhere.empty()) {
    return "every rank arrived and is waiting: the operation itself is stuck or slow (a large "
           "tensor on a slow link? raise the timeout)";
  }
  std::string out;
  if (!missing.empty()) out = "ranks that never arrived: " + missing;
  if (!elsewhere.empty()) {
    out += ::tessera::detail::cat(out.empty() ? "" : "; ",
                                  "ranks waiting in another operation of this group: ", elsewhere);
  }
  return out;
}

}  // namespace tessera::parallel
