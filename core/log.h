// A small line logger: "2024-05-01T12:34:56.789Z INFO  [rank 3] message". No global state: each
// process owns its Logger and passes it to whoever logs.
#pragma once

#include <iostream>
#include <mutex>
#include <string>

namespace tessera {

enum class LogLevel { debug, info, warn, error };

// Parses "debug", "info", "warn" (or "warning") or "error"; throws Error listing them otherwise.
LogLevel parse_log_level(const std::string& name);

class Logger {
 public:
  // Writes messages at `level` and above to *out (not owned: it must outlive the logger).
  // "[rank N]" is printed only when world_size > 1.
  explicit Logger(int rank = 0, LogLevel level = LogLevel::info, std::ostream* out = &std::cerr,
                  int world_size = 1);

  // Each writes one prefixed line per line of `message` and flushes; safe from any thread.
  void debug(const std::string& message) { log(LogLevel::debug, message); }
  void info(const std::string& message) { log(LogLevel::info, message); }
  void warn(const std::string& message) { log(LogLevel::warn, message); }
  void error(const std::string& message) { log(LogLevel::error, message); }
  void log(LogLevel level, const std::string& message);

  bool enabled(LogLevel level) const { return level >= level_; }
  int rank() const { return rank_; }

 private:
  int rank_;
  int world_size_;
  LogLevel level_;
  std::ostream* out_;
  std::mutex mutex_;
};

}  // namespace tessera
