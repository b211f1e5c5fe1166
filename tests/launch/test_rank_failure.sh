#!/usr/bin/env bash
# A rank that stops mid-training (SIGSTOP: alive but silent, the way a hung GPU or a stuck NFS read
# looks) makes the other ranks fail within parallel.timeout_s with an error that names it, and
# the whole job exits nonzero; a rank killed outright (SIGKILL) ends the job too; a bad job file is
# one error line, not one per rank.
# usage: test_rank_failure.sh <build/tessera> <mpiexec> [mpiexec flags...]
set -uo pipefail
tessera=$1 mpiexec=$2
shift 2
work=$(mktemp -d)
trap 'pkill -KILL -f "$work/job.yaml" 2>/dev/null; cat "$work/out.txt" > /tmp/rank_failure_last.txt 2>/dev/null; rm -rf "$work"' EXIT

# A small corpus in the Brown format (tagged words, one document per file).
mkdir -p "$work/corpus"
words=(the/at dog/nn cat/nn ran/vbd sat/vbd on/in a/at mat/nn quickly/rb and/cc jury/nn said/vbd)
RANDOM=7
for d in $(seq 1 40); do
  doc=""
  for w in $(seq 1 160); do doc+="${words[RANDOM % 12]} "; done
  printf '\n\n\t%s./.\n' "$doc" > "$work/corpus/ca$(printf %02d "$d")"
done
cat > "$work/job.yaml" <<YAML
name: failure
threads: 1
model: {n_layer: 2, n_head: 2, d_model: 64, vocab_size: 280, max_seq_len: 32}
data: {corpus_dir: $work/corpus, dir: $work/data, val_fraction: 0.1}
train: {batch_size: 6, seq_len: 32, steps: 100000, warmup_steps: 10, log_every: 1}
eval: {every: 0}
checkpoint: {dir: $work/run, every: 0, resume: none}
sample: {tokens: 0}
parallel: {zero: 2, timeout_s: 4}
YAML

# The world rank-2 process of the job, once it exists.
rank2_pid() {
  for p in $(pgrep -f "$work/job.yaml"); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=2'; then
      echo "$p"
      return
    fi
  done
}

# run: starts a 3-rank job, sends SIG$SIGNAL to rank 2 after step 3, waits for the job's end (at
# most 15 s) and sets $rc, $secs and $out.
run() {
  OMP_NUM_THREADS=1 "$mpiexec" "$@" -np 3 "$tessera" train --config "$work/job.yaml" \
    > "$work/out.txt" 2>&1 &
  local job=$!
  for _ in $(seq 1 600); do
    grep -q "step     3/" "$work/out.txt" 2>/dev/null && break
    kill -0 "$job" 2>/dev/null || { echo "FAIL: the job ended before step 3:"; cat "$work/out.txt"; exit 1; }
    sleep 0.1
  done
  local pid
  pid=$(rank2_pid)
  [ -n "$pid" ] || { echo "FAIL: no rank-2 process found"; cat "$work/out.txt"; exit 1; }
  local start=$(date +%s.%N)
  kill -"$SIGNAL" "$pid"
  # secs: from the signal to the first rank's error (SIGSTOP) or to the job's end (SIGKILL).
  secs=""
  local waited=0
  while kill -0 "$job" 2>/dev/null && [ $waited -lt 300 ]; do
    if [ -z "$secs" ] && grep -q "never arrived" "$work/out.txt"; then
      secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    fi
    sleep 0.05
    waited=$((waited + 1))
  done
  kill -0 "$job" 2>/dev/null && { echo "FAIL: job still running 15 s after SIG$SIGNAL"; exit 1; }
  wait "$job"
  rc=$?
  [ -n "$secs" ] || secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  out=$(cat "$work/out.txt")
}

SIGNAL=STOP run "$@"
echo "SIGSTOP: first error after ${secs}s, exit $rc"
[ "$rc" -ne 0 ] || { echo "FAIL: job exited 0"; exit 1; }
echo "$out" | grep -q "collective timeout: .* ranks that never arrived: 2" ||
  { echo "FAIL: no timeout error naming rank 2:"; echo "$out" | tail -20; exit 1; }
echo "$out" | grep "collective timeout" | head -2
awk -v s="$secs" 'BEGIN { exit !(s < 4 + 2) }' || { echo "FAIL: took ${secs}s, timeout is 4 s"; exit 1; }

SIGNAL=KILL run "$@"
echo "SIGKILL: exit $rc after ${secs}s"
[ "$rc" -ne 0 ] || { echo "FAIL: job exited 0"; exit 1; }
awk -v s="$secs" 'BEGIN { exit !(s < 4 + 2) }' || { echo "FAIL: took ${secs}s, timeout is 4 s"; exit 1; }

# A bad job file fails every rank alike: the error is printed once, by rank 0, and the job exits 1.
OMP_NUM_THREADS=1 "$mpiexec" "$@" -np 3 "$tessera" train --config "$work/job.yaml" \
  --set train.warmup_steps=-1 > "$work/out.txt" 2>&1
rc=$?
errors=$(grep -c "ERROR" "$work/out.txt")
echo "bad config: exit $rc, $errors error line(s)"
[ "$rc" -ne 0 ] && [ "$errors" -eq 1 ] && grep -q "(every rank): .*warmup_steps" "$work/out.txt" ||
  { echo "FAIL: want one error line naming warmup_steps:"; cat "$work/out.txt"; exit 1; }
echo "PASS"
