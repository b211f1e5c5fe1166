#!/usr/bin/env bash
# Configures and builds Tessera in build/ (Release). Extra arguments go to CMake's configure step,
# e.g. scripts/build.sh -DTESSERA_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$(nproc)"
