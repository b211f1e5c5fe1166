#include "core/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <sstream>

#include "core/error.h"

namespace tessera {
namespace {

// "2024-05-01T12:34:56.789Z" (UTC, milliseconds).
std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", static_cast<int>(ms.count()));
  return buf;
}

const char* level_tag(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "DEBUG";
    case LogLevel::info:
      return "INFO ";
    case LogLevel::warn:
      return "WARN ";
    case LogLevel::error:
      return "ERROR";
  }
  return "?";
}

}  // namespace

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::debug;
  if (name == "info") return LogLevel::info;
  if (name == "warn" || name == "warning") return LogLevel::warn;
  if (name == "error") return LogLevel::error;
  TS_THROW("unknown log level '", name, "': use debug, info, warn or error");
}

Logger::Logger(int rank, LogLevel level, std::ostream* out, int world_size)
    : rank_(rank), world_size_(world_size), level_(level), out_(out) {
  TS_CHECK(out != nullptr, "Logger needs an output stream");
}

void Logger::log(LogLevel level, const std::string& message) {
  if (!enabled(level)) return;
  std::string prefix = utc_timestamp() + " " + level_tag(level) + " ";
  if (world_size_ > 1) prefix += "[rank " + std::to_string(rank_) + "] ";
  std::string text;
  std::istringstream lines(message);
  for (std::string line; std::getline(lines, line);) text += prefix + line + "\n";
  if (text.empty()) text = prefix + "\n";
  std::lock_guard<std::mutex> lock(mutex_);
  *out_ << text << std::flush;
}

}  // namespace tessera
