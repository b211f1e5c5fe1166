// The control channel behind communicator timeouts. When a wait runs out of time, the rank
// announces "timed out at op #seq <kind>" to the other members over a communicator reserved for
// control messages and listens for a grace period; members blocked in a wait of the same group
// answer "waiting at op #seq <kind>" (they poll for announcements between polls of their own op).
// Members not heard from never arrived (or already left the op). Used by the MPI backend and,
// through the MPI communicator of the same group, by the NCCL one.
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm_stats.h"

namespace tessera::parallel {

// What one member said during a survey.
struct PeerReport {
  bool heard = false;
  bool gave_up = false;  // it timed out too (otherwise it is still waiting)
  uint64_t seq = 0;
  CommKind kind = CommKind::barrier;
};

class ControlChannel {
 public:
  // `comm` is a communicator used for nothing else (not owned; it must outlive the channel).
  explicit ControlChannel(MPI_Comm comm);
  // Frees the requests of unfinished sends (their small buffers are leaked on purpose).
  ~ControlChannel();
  ControlChannel(const ControlChannel&) = delete;
  ControlChannel& operator=(const ControlChannel&) = delete;

  // Non-blocking: answers every announcement that has arrived with where this rank waits, and
  // remembers who gave up (a later survey counts them as arrived: they stopped listening).
  void answer(uint64_t seq, CommKind kind);
  // After a local timeout at op #seq: announces it to each of `members` (group ranks; this rank
  // is skipped) and listens for up to grace_s, or until all of them were heard. Entry r of the
  // result is group rank r.
  std::vector<PeerReport> survey(uint64_t seq, CommKind kind, const std::vector<int>& members,
                                 double grace_s);
  // Receives and drops every control message that has arrived (before the communicator is freed).
  void drain();

 private:
  using Message = std::array<int64_t, 3>;  // {type, seq, kind}
  void post(int dest, const Message& msg);
  // Receives one arrived message, if any, into msg/source.
  bool receive(Message& msg, int& source);
  void reap();

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  struct Send {
    std::unique_ptr<Message> buffer;
    MPI_Request request;
  };
  std::vector<Send> sends_;
  std::vector<PeerReport> gave_up_;  // announcements received, by group rank
};

// The diagnosis after a survey: "ranks that never arrived: 4" (world ranks) when some of
// `members` were not heard, plus the members heard waiting at another op ("world rank 6 is at op
// #18 broadcast"), or a note that everyone arrived.
std::string diagnose_survey(const std::vector<PeerReport>& reports, const std::vector<int>& members,
                            const std::vector<int>& world_ranks, int self, uint64_t seq,
                            CommKind kind);

}  // namespace tessera::parallel
