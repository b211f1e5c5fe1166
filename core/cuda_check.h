// Checking macro for CUDA runtime calls: a failure throws tessera::Error with the call and the
// CUDA error string. Include only from .cu files or CUDA-enabled sources.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define TS_CUDA_CHECK(call)                                                                   \
  do {                                                                                        \
    cudaError_t ts_err_ = (call);                                                             \
    if (ts_err_ != cudaSuccess) {                                                             \
      throw ::tessera::Error(__FILE__, __LINE__, #call,                                       \
                             ::tessera::detail::cat("CUDA error ", cudaGetErrorName(ts_err_), \
                                                    ": ", cudaGetErrorString(ts_err_)));      \
    }                                                                                         \
  } while (0)
