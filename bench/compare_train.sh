#!/usr/bin/env bash
# Tessera vs PyTorch on the same machine, same threads, same model and batch (configs/tiny.yaml:
# 4 layers, d=256, 4 heads, T=256, batch 8, vocab 4096, fp32). Prints both JSON lines and the
# ratio of tokens/s; with --record, appends the result to bench/RESULTS.md.
# usage: bench/compare_train.sh [--threads N] [--steps N] [--record]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 steps=10 record=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --record) record=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x build/tessera ] || { echo "build first: bash scripts/build.sh" >&2; exit 1; }
export OMP_NUM_THREADS=$threads
tessera_json=$(./build/tessera bench train --config configs/tiny.yaml --threads "$threads" \
  --steps "$steps" --warmup 2 | tail -n 1)
torch_json=$(/usr/bin/python3 bench/pytorch_gpt2.py --n_layer 4 --n_embd 256 --n_head 4 \
  --seq_len 256 --batch 8 --vocab 4096 --threads "$threads" --steps "$steps" --warmup 2 | tail -n 1)
echo "$tessera_json"
echo "$torch_json"
ratio=$(/usr/bin/python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f'{a[\"tokens_per_s\"]/b[\"tokens_per_s\"]:.2f}')" "$tessera_json" "$torch_json")
echo "tessera / pytorch tokens/s: ${ratio}x"
if [ "$record" = 1 ]; then
  {
    echo
    echo "### $(date -u +%Y-%m-%d) — tiny GPT-2 training step, CPU, $threads threads"
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)."
    echo "Command: \`bench/compare_train.sh --threads $threads --steps $steps --record\`"
    echo
    echo '```'
    echo "$tessera_json"
    echo "$torch_json"
    echo '```'
    echo
    echo "**Tessera / PyTorch = ${ratio}x** tokens/s."
  } >> bench/RESULTS.md
fi
