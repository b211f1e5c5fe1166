#!/usr/bin/env bash
# Interleaved 1F1B against plain 1F1B: 2 pipeline ranks with one core each (the machine's two),
# the tiny config's width with 8 layers, 4 micro-batches of 2 sequences per step, and 1, 2 or 4
# layer chunks (virtual stages) per rank. Each run trains 30 steps from the same seed (the losses
# agree); the script reports each run's throughput and each v's median over the repeats. Theory
# (Narayanan et al. 2021): a step takes M + (P − 1)/v micro-batch times, so with P = 2 and M = 4
# v = 2 should be 1.11× and v = 4 1.18× as fast as v = 1, less the v-fold p2p messages and the
# uneven stages (the LM head sits on the last).
# usage: bench/pipeline_interleave.sh [--repeats N]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=3
[ "${1:-}" = "--repeats" ] && repeats=$2
[ -x build/tessera ] || { echo "build first: bash scripts/build.sh" >&2; exit 1; }
[ -d data/brown ] || bash scripts/fetch_corpus.sh data
flags=(--oversubscribe)
[ "$(id -u)" -ne 0 ] || flags+=(--allow-run-as-root)
declare -A runs
for r in $(seq "$repeats"); do
  for v in 1 2 4; do
    out=$(OMP_NUM_THREADS=1 mpirun "${flags[@]}" -np 2 ./build/tessera train \
      --config configs/tiny.yaml --set model.n_layer=8 --set parallel.pp=2 \
      --set parallel.virtual_stages=$v --set train.batch_size=2 --set train.grad_accum=4 \
      --set train.steps=30 --set train.warmup_steps=3 --set train.log_every=30 --set threads=1 \
      --set eval.every=0 --set sample.tokens=0 --set checkpoint.every=0 \
      --set checkpoint.resume=none --set checkpoint.dir="$(mktemp -d)" 2>&1)
    line=$(echo "$out" | grep 'step    30/30') || { echo "$out" >&2; exit 1; }
    tps=$(echo "$out" | sed -n 's/^throughput: \([0-9.]*\) tokens\/s/\1/p')
    echo "repeat $r v=$v: $tps tok/s | $(echo "$line" | sed 's/^.*\] //')"
    runs[$v]+="$tps "
  done
done
for v in 1 2 4; do
  median=$(echo "${runs[$v]}" | tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "v=$v median $median tok/s"
done
