#include "parallel/comm_stats.h"

#include <cstdio>

#include "core/error.h"

namespace tessera::parallel {

const char* comm_kind_name(CommKind kind) {
  switch (kind) {
    case CommKind::all_reduce:
      return "all_reduce";
    case CommKind::reduce_scatter:
      return "reduce_scatter";
    case CommKind::all_gather:
      return "all_gather";
    case CommKind::broadcast:
      return "broadcast";
    case CommKind::p2p:
      return "p2p";
    case CommKind::barrier:
      return "barrier";
  }
  TS_THROW("unknown CommKind ", static_cast<int>(kind));
}

double ring_wire_bytes(CommKind kind, int group_size, uint64_t payload_bytes) {
  TS_CHECK_GE(group_size, 1, "group size");
  if (group_size == 1) return 0.0;
  const double n = group_size;
  const double b = static_cast<double>(payload_bytes);
  switch (kind) {
    case CommKind::all_reduce:
      return 2.0 * (n - 1.0) / n * b;
    case CommKind::reduce_scatter:
    case CommKind::all_gather:
      return (n - 1.0) / n * b;
    case CommKind::broadcast:
    case CommKind::p2p:
      return b;
    case CommKind::barrier:
      return 0.0;
  }
  TS_THROW("unknown CommKind ", static_cast<int>(kind));
}

void CommStats::record(CommKind kind, int group_size, uint64_t payload_bytes) {
  Entry& e = (*this)[kind];
  e.calls += 1;
  e.payload_bytes += payload_bytes;
  e.wire_bytes += ring_wire_bytes(kind, group_size, payload_bytes);
}

uint64_t CommStats::total_calls() const {
  uint64_t n = 0;
  for (const Entry& e : by_kind) n += e.calls;
  return n;
}

double CommStats::total_wire_bytes() const {
  double n = 0;
  for (const Entry& e : by_kind) n += e.wire_bytes;
  return n;
}

std::string CommStats::str() const {
  std::string out;
  for (int k = 0; k < kNumCommKinds; ++k) {
    const Entry& e = by_kind[k];
    if (e.calls == 0) continue;
    if (!out.empty()) out += "\n";
    out += ::tessera::detail::cat(comm_kind_name(static_cast<CommKind>(k)), ": ", e.calls,
                                  " calls, ", format_bytes(static_cast<double>(e.payload_bytes)),
                                  " payload, ", format_bytes(e.wire_bytes), " on the wire");
  }
  return out;
}

std::string format_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0 || bytes == static_cast<double>(static_cast<int64_t>(bytes))) {
    std::snprintf(buf, sizeof buf, "%.0f %s", bytes, kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", bytes, kUnits[unit]);
  }
  return buf;
}

}  // namespace tessera::parallel
