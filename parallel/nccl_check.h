// Checking macro for NCCL calls: a failure throws tessera::Error with the call, NCCL's error name
// and its last error text. ncclInProgress (non-blocking communicators) is not a failure.
#pragma once

#include <nccl.h>

#include "core/error.h"

#define TS_NCCL_CHECK(call)                                                                    \
  do {                                                                                         \
    const ncclResult_t ts_nr_ = (call);                                                        \
    if (ts_nr_ != ncclSuccess && ts_nr_ != ncclInProgress) {                                   \
      throw ::tessera::Error(__FILE__, __LINE__, #call,                                        \
                             ::tessera::detail::cat("NCCL error ", ncclGetErrorString(ts_nr_), \
                                                    ": ", ncclGetLastError(nullptr)));         \
    }                                                                                          \
  } while (0)
