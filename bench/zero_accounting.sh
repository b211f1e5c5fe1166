#!/usr/bin/env bash
# ZeRO model state and data-parallel traffic per rank, measured by `tessera train` under mpirun on
# the tiny config (2 steps per stage), against the ZeRO paper's formulas (docs/parallel.md).
# With --record, appends the tables to bench/RESULTS.md.
# usage: bench/zero_accounting.sh [--np N] [--set key=value ...] [--record]
#   e.g. --np 8 --set parallel.tp=2 --set parallel.pp=2 --set train.batch_size=2 --set train.grad_accum=4
set -euo pipefail
cd "$(dirname "$0")/.."
np=4 record=0 sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --np) np=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --record) record=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x build/tessera ] || { echo "build first: bash scripts/build.sh" >&2; exit 1; }
flags=(--oversubscribe)
[ "$(id -u)" -ne 0 ] || flags+=(--allow-run-as-root)
tables=""
for zero in 0 1 2 3; do
  out=$(OMP_NUM_THREADS=1 mpirun "${flags[@]}" -np "$np" ./build/tessera train \
    --config configs/tiny.yaml --set parallel.zero=$zero --set train.steps=2 \
    --set train.warmup_steps=1 --set eval.every=0 --set sample.tokens=0 --set threads=1 \
    --set checkpoint.every=0 --set checkpoint.resume=none \
    --set checkpoint.dir="$(mktemp -d)" "${sets[@]}" 2>&1)
  table=$(echo "$out" | sed -n '/model state and data-parallel traffic/,$p' | grep '\] ' |
          tail -n +2 | sed 's/^.*\] //')
  [ -n "$table" ] || { echo "$out" >&2; exit 1; }
  tables+="$table"$'\n\n'
done
echo "$tables"
if [ "$record" = 1 ]; then
  {
    echo
    echo "### $(date -u +%Y-%m-%d) — ZeRO accounting, tiny config, $np ranks (MPI, CPU)"
    echo
    echo "Command: \`bench/zero_accounting.sh --np $np ${sets[*]} --record\`. Model state held after step 2 and"
    echo "bytes each rank sent in the data-parallel group during step 2 (ring model), against the"
    echo "formulas with fp32 AdamW (P = G = 4, K = 8 bytes per parameter, 4-byte elements)."
    echo
    echo '```'
    printf '%s' "$tables"
    echo '```'
  } >> bench/RESULTS.md
fi
