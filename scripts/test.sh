#!/usr/bin/env bash
# The README's second command: installs missing dependencies, builds, and runs the whole test
# suite with CTest. GPU tests skip cleanly on a machine without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900
