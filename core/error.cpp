#include "core/error.h"

namespace tessera {
namespace {

std::string format(const std::string& file, int line, const std::string& expr,
                   const std::string& message) {
  // Keep the path short: from the project's top folder on.
  std::string shown = file;
  for (const char* top :
       {"/core/", "/kernels/", "/parallel/", "/trainer/", "/server/", "/launch/"}) {
    auto pos = shown.rfind(top);
    if (pos != std::string::npos) {
      shown = shown.substr(pos + 1);
      break;
    }
  }
  std::string out = shown + ":" + std::to_string(line) + ": ";
  if (!expr.empty()) out += "check `" + expr + "` failed: ";
  out += message;
  return out;
}

}  // namespace

Error::Error(std::string file, int line, std::string expr, std::string message)
    : std::runtime_error(format(file, line, expr, message)),
      file_(std::move(file)),
      line_(line),
      expr_(std::move(expr)),
      message_(std::move(message)) {}

}  // namespace tessera
