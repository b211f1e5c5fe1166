// Checking macro for MPI calls: a failure throws tessera::Error with the call and MPI's error
// string. Communicators set MPI_ERRORS_RETURN so that errors reach this check instead of aborting.
#pragma once

#include <mpi.h>

#include "core/error.h"

namespace tessera::parallel::detail {

// MPI's text for an error code: "MPI_ERR_TRUNCATE: message truncated".
inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(len));
}

}  // namespace tessera::parallel::detail

#define TS_MPI_CHECK(call)                                                                \
  do {                                                                                    \
    const int ts_rc_ = (call);                                                            \
    if (ts_rc_ != MPI_SUCCESS) {                                                          \
      throw ::tessera::Error(                                                             \
          __FILE__, __LINE__, #call,                                                      \
          ::tessera::detail::cat("MPI error: ",                                           \
                                 ::tessera::parallel::detail::mpi_error_string(ts_rc_))); \
    }                                                                                     \
  } while (0)
