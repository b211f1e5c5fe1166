// Per-communicator traffic statistics: calls and bytes per collective kind, with the bytes each
// rank puts on the wire under the ring-algorithm model, so that ZeRO/TP accounting can compare the
// measured traffic with its formulas.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace tessera::parallel {

enum class CommKind : uint8_t { all_reduce, reduce_scatter, all_gather, broadcast, p2p, barrier };
inline constexpr int kNumCommKinds = 6;

// "all_reduce", "reduce_scatter", "all_gather", "broadcast", "p2p", "barrier".
const char* comm_kind_name(CommKind kind);

// Bytes one rank sends for one call in a group of N ranks, ring-algorithm model (NCCL's rings,
// the usual ZeRO/Megatron cost formulas). B is the call's payload
// (CommStats::Entry::payload_bytes):
//   all_reduce      2(N-1)/N * B   B = bytes of the tensor (reduce-scatter + all-gather phases)
//   reduce_scatter   (N-1)/N * B   B = bytes of the full input (N * output bytes)
//   all_gather       (N-1)/N * B   B = bytes of the full output (N * input bytes)
//   broadcast              B       B = bytes of the tensor (a pipelined ring forwards all of it)
//   p2p                    B       B = bytes of this rank's sends (receives send nothing)
//   barrier                0
// Every kind is 0 when N == 1 (the call short-circuits). The model counts the tensor's own dtype:
// a backend that widens bf16/f16 to f32 on the wire (the MPI one does) moves twice as many bytes.
double ring_wire_bytes(CommKind kind, int group_size, uint64_t payload_bytes);

struct CommStats {
  struct Entry {
    uint64_t calls = 0;          // calls made on this communicator, short-circuited ones included
    uint64_t payload_bytes = 0;  // sum of B above
    double wire_bytes = 0;       // sum of ring_wire_bytes(kind, N, B)
  };
  std::array<Entry, kNumCommKinds> by_kind{};

  const Entry& operator[](CommKind kind) const { return by_kind[static_cast<int>(kind)]; }
  Entry& operator[](CommKind kind) { return by_kind[static_cast<int>(kind)]; }
  // Adds one call of `kind` with payload B in a group of `group_size` ranks.
  void record(CommKind kind, int group_size, uint64_t payload_bytes);
  uint64_t total_calls() const;
  double total_wire_bytes() const;
  // One line per kind that was called: "all_reduce: 3 calls, 48 KiB payload, 64 KiB on the wire".
  std::string str() const;
};

// "16 KiB", "1.5 MiB", "12 B": binary units, at most one decimal.
std::string format_bytes(double bytes);

}  // namespace tessera::parallel
