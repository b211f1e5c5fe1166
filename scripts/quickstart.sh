#!/usr/bin/env bash
# The README's first command: installs the dependencies, builds, fetches the Brown corpus and
# trains the tiny GPT-2 on it on the CPU (about 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
bash scripts/fetch_corpus.sh data
./build/tessera train --config configs/tiny.yaml "$@"
