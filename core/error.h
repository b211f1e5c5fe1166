// Tessera's one exception type and the checking macros that throw it.
// Library code never calls exit()/abort(): every failure is a tessera::Error the caller can handle.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tessera {

// An error raised by a failed check: where it failed, what failed, and a message that says what
// to change. what() is one line: "file:line: check `expr` failed: message".
class Error : public std::runtime_error {
 public:
  Error(std::string file, int line, std::string expr, std::string message);

  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& expr() const { return expr_; }
  const std::string& message() const { return message_; }

 private:
  std::string file_;
  int line_;
  std::string expr_;
  std::string message_;
};

namespace detail {

// Streams every argument into one string (used by the checking macros).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace detail
}  // namespace tessera

// Throws tessera::Error when `cond` is false; the remaining arguments are streamed into the
// message.
#define TS_CHECK(cond, ...)                                                                   \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      throw ::tessera::Error(__FILE__, __LINE__, #cond, ::tessera::detail::cat(__VA_ARGS__)); \
    }                                                                                         \
  } while (0)

// Compares two values and puts both into the message when they differ.
#define TS_CHECK_OP(a, op, b, ...)                                                 \
  do {                                                                             \
    const auto& ts_a_ = (a);                                                       \
    const auto& ts_b_ = (b);                                                       \
    if (!(ts_a_ op ts_b_)) {                                                       \
      throw ::tessera::Error(                                                      \
          __FILE__, __LINE__, #a " " #op " " #b,                                   \
          ::tessera::detail::cat("(", ts_a_, " vs ", ts_b_, ") ", ##__VA_ARGS__)); \
    }                                                                              \
  } while (0)

#define TS_CHECK_EQ(a, b, ...) TS_CHECK_OP(a, ==, b, ##__VA_ARGS__)
#define TS_CHECK_NE(a, b, ...) TS_CHECK_OP(a, !=, b, ##__VA_ARGS__)
#define TS_CHECK_LT(a, b, ...) TS_CHECK_OP(a, <, b, ##__VA_ARGS__)
#define TS_CHECK_LE(a, b, ...) TS_CHECK_OP(a, <=, b, ##__VA_ARGS__)
#define TS_CHECK_GT(a, b, ...) TS_CHECK_OP(a, >, b, ##__VA_ARGS__)
#define TS_CHECK_GE(a, b, ...) TS_CHECK_OP(a, >=, b, ##__VA_ARGS__)

// Throws unconditionally (an unreachable branch or an unsupported case).
#define TS_THROW(...) \
  throw ::tessera::Error(__FILE__, __LINE__, "", ::tessera::detail::cat(__VA_ARGS__))
