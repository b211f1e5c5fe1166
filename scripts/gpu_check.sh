#!/usr/bin/env bash
# The CUDA tests and the GPU benchmark on a machine with a GPU and the CUDA 13 toolkit but none of
# the Debian packages: the device machine (nvcc, PyTorch; no MPI, gRPC, yaml-cpp, OpenBLAS or
# GoogleTest). The binaries are built here and carried there:
#   scripts/gpu_check.sh build   here: builds the CUDA test binaries and `tessera` for any x86-64
#                                CPU and for sm_80 + sm_90 into build-gpu/, and packs them with the
#                                shared libraries the GPU machine lacks into .gpu/ (git-ignored)
#                                It also trains a small model here for 30 steps and keeps its
#                                checkpoint and, from `tessera generate --logits-out`, its logits
#   scripts/gpu_check.sh run [PART...]   there, the parts in the order given (default: tests bench):
#     tests     every test binary in .gpu/bin, then that checkpoint opened in transformers
#               (bench/hf_export_check.py)
#     bench     tessera, then pytorch:
#     tessera   the card's dense bf16 rate, GPT-2 124M training steps in Tessera (bf16, fp16, fp32)
#     pytorch   the same in PyTorch (bf16 eager, bf16 torch.compile, fp32 eager)
#     sanitize  compute-sanitizer over the CUDA op tests (memcheck on all of them; racecheck and
#               synccheck on the attention kernels)
#     profile   GPU time per kernel of one bf16 GPT-2 124M training step (Nsight Compute,
#               bench/kernel_times.py)
#     attention the attention kernels alone: each variant timed (bench_attention_cuda) against
#               PyTorch's SDPA backends at GPT-2 124M's shape (bench/pytorch_attention.py), then
#               Nsight Compute's occupancy, throughput and issue details of them in a training step
#   A summary is printed last and kept in $OUT/summary.txt; every log and gtest XML is packed into
#   $OUT/logs.tar.gz after each part ($OUT: the device tool's folder, else .gpu/out).
#   GPU_CHECK_BUDGET_S (seconds) stops each command at the time left, so that a lease's limit
#   never cuts the summary off; each command also has its own limit (a hang costs minutes, not all).
# With the device tool: run(command="GPU_CHECK_BUDGET_S=300 bash scripts/gpu_check.sh run",
#                           carry=[".gpu"], timeout_s=330).
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(test_caching_allocator test_cuda_ops test_gpt2_cuda test_train_cuda test_comm_nccl)
ompi_plugins=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3  # Debian 12's Open MPI components

build() {
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_NATIVE=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
  cmake --build build-gpu --target "${tests[@]}" tessera bench_attention_cuda
  rm -rf .gpu
  mkdir -p .gpu/bin .gpu/lib
  for t in "${tests[@]}"; do cp "build-gpu/tests/$t" .gpu/bin/; done
  cp build-gpu/tessera build-gpu/bench/bench_attention_cuda .gpu/
  # Libraries ldd resolves, except the C runtime (newer there), the driver, cuBLAS and NCCL (there
  # in the CUDA toolkit and PyTorch's nvidia-* wheels; far too large to carry: 64 MiB in all).
  # Open MPI's components too: test_comm_nccl bootstraps NCCL over MPI, and there it runs as a
  # singleton (no mpirun) with these loaded from the carried folder.
  cp -r "$ompi_plugins" .gpu/lib/openmpi3
  ldd .gpu/bin/* .gpu/tessera .gpu/bench_attention_cuda .gpu/lib/openmpi3/*.so | awk '/=> \//{print $3}' | sort -u |
    grep -v -E '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|libcuda|libcublas[A-Za-z]*|libnccl)\.so' |
    while read -r lib; do cp -L "$lib" .gpu/lib/; done
  tar -C .gpu -cJf .gpu/lib.tar.xz lib
  rm -rf .gpu/lib
  # A small model trained here, exported for the Hugging Face check there.
  [ -d data/brown ] || bash scripts/fetch_corpus.sh data
  rm -rf build-gpu/hf-run
  ./build-gpu/tessera train --config configs/tiny.yaml --set model.n_layer=2 \
    --set model.d_model=64 --set model.n_head=2 --set train.steps=30 --set train.warmup_steps=5 \
    --set eval.every=0 --set sample.tokens=0 --set checkpoint.dir=build-gpu/hf-run \
    --set checkpoint.resume=none --set checkpoint.format=consolidated >/dev/null
  mkdir -p .gpu/hf/checkpoint
  cp build-gpu/hf-run/checkpoints/step_000030/{config.json,model.safetensors,tokenizer.json} \
    .gpu/hf/checkpoint/
  ./build-gpu/tessera generate --checkpoint .gpu/hf/checkpoint --prompt "The jury said it did find" \
    --tokens 0 --logits-out .gpu/hf/logits.safetensors >/dev/null
  echo "carry .gpu ($(du -sh .gpu | cut -f1)): $(ls .gpu/bin | tr '\n' ' ') tessera bench_attention_cuda"
}

# LD_LIBRARY_PATH for the carried binaries: their libraries, then cuBLAS and NCCL from the toolkit
# or from PyTorch's nvidia-* wheels, whichever is there.
library_path() {
  local libs=$1 d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null); do
    [ -d "$d" ] && libs="$libs:$d"
  done
  echo "$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# limited SECONDS CMD...: CMD stopped after SECONDS, or when the budget's time is up (exit 124).
limited() {
  local limit=$1 left=$((budget - SECONDS - 5))
  shift
  ((left < limit)) && limit=$left
  if ((limit <= 0)); then
    echo "not run: the time budget (GPU_CHECK_BUDGET_S=$budget) is spent"
    return 124
  fi
  timeout --kill-after=5 "$limit" "$@"
}

# timed_out STATUS LOG: whether a command that `limited` ran was stopped at its time limit (not
# refused for want of budget). Most likely a kernel that never ends: the tests and parts after it
# would hang on the same kernels, so they are skipped (a hang costs a call minutes, not all of it).
timed_out() {
  (($1 == 124 || $1 == 137)) && ! grep -q '^not run: the time budget' "$2"
}

# note LINE: one line of the summary, printed at the end and kept in $OUT/summary.txt now.
note() {
  summary+="$1"$'\n'
  printf '%s' "$summary" > "$out/summary.txt"
}

run_tests() {
  local status=0 bin name result counts
  for bin in .gpu/bin/*; do
    name=$(basename "$bin")
    if [ -n "$hung" ]; then
      note "$name: skipped ($hung ran out of time)"
      continue
    fi
    # TESSERA_REQUIRE_CUDA: a CUDA test fails instead of skipping when it finds no device.
    # An MPI test binary runs as a one-rank singleton: no mpirun, no orted, the carried components.
    if TESSERA_REQUIRE_CUDA=1 LD_LIBRARY_PATH="$libpath" OMPI_MCA_ess_singleton_isolated=1 \
        OMPI_MCA_mca_base_component_path=/tmp/tessera-gpu/lib/openmpi3 \
        OMPI_MCA_mca_base_component_show_load_errors=0 OMPI_ALLOW_RUN_AS_ROOT=1 \
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 limited 120 "$bin" \
        --gtest_output="xml:$logs/$name.xml" > "$logs/$name.log" 2>&1; then
      result=passed
    else
      result=$?
      timed_out "$result" "$logs/$name.log" && hung=$name
      result="FAILED (exit $result)"
      status=1
    fi
    counts=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$logs/$name.log" | tr '\n' ' ')
    note "$name: $result  $counts"
    grep -E -A3 '^\[  FAILED  \]|Failure$|error' "$logs/$name.log" | head -40 || true
  done
  if limited 120 python3 bench/hf_export_check.py --checkpoint .gpu/hf/checkpoint \
      --logits .gpu/hf/logits.safetensors > "$logs/hf_export.log" 2>&1; then
    note "hf_export_check: passed  $(tail -1 "$logs/hf_export.log")"
  else
    note "hf_export_check: FAILED  $(tail -3 "$logs/hf_export.log")"
    status=1
  fi
  return $status
}

# The card's dense bf16 rate, then Tessera's GPT-2 124M steps in bf16, fp16 and fp32.
run_tessera() {
  LD_LIBRARY_PATH="$libpath" limited 60 .gpu/tessera bench gemm --size 8192 --steps 20 \
    > "$logs/gemm.log" 2>&1 || true
  peak=$(sed -n 's/.*"tflops":\([0-9.]*\).*/\1/p' "$logs/gemm.log")
  note "dense bf16 GEMM 8192^3: ${peak:-FAILED $(tail -2 "$logs/gemm.log")} TFLOP/s"
  tessera_bench bf16
  tessera_bench fp16
  tessera_bench fp32
}

# The same model and batch in PyTorch: bf16 eager and torch.compile, fp32 eager.
run_pytorch() {
  gpt2=(--n_layer 12 --n_embd 768 --n_head 12 --seq_len 1024 --batch 16 --vocab 50304
        --steps 10 --warmup 3 --device cuda)
  pytorch_bench bf16
  pytorch_bench bf16 --compile
  pytorch_bench none
}

run_bench() {
  run_tessera
  run_pytorch
}

# tessera_bench PRECISION: 10 timed GPT-2 124M training steps of `tessera bench train`.
tessera_bench() {
  local log="$logs/tessera_$1.log"
  LD_LIBRARY_PATH="$libpath" limited 120 .gpu/tessera bench train \
    --config configs/gpt2-124m.yaml --set train.precision="$1" --steps 10 --warmup 3 \
    ${peak:+--peak-tflops "$peak"} > "$log" 2>&1 || echo "exit $?" >> "$log"
  note "tessera $1: $(tail -2 "$log" | tr '\n' ' ')"
}

# pytorch_bench AMP [--compile]: the same model and steps in PyTorch (bench/pytorch_gpt2.py).
pytorch_bench() {
  local log="$logs/pytorch_${1}${2:-}.log" line
  line=$(PYTHONUNBUFFERED=1 limited 180 python3 bench/pytorch_gpt2.py "${gpt2[@]}" --amp "$@" \
         > "$log" 2>&1 && tail -1 "$log") || line="FAILED: $(tail -3 "$log")"
  note "pytorch amp=$*: $line"
}

# compute-sanitizer's memcheck over every CUDA op test, racecheck (shared-memory hazards) and
# synccheck over the kernels that share memory between threads: attention (tiles between warps),
# layernorm (its backward's sums) and the softmax (its staged row).
run_sanitize() {
  local status=0 tool filter
  if ! command -v compute-sanitizer >/dev/null; then
    note "sanitize: no compute-sanitizer on this machine"
    return 0
  fi
  for tool in memcheck racecheck synccheck; do
    filter='*'
    # racecheck and synccheck: the kernels that share memory between threads (the at-scale
    # attention run would take minutes)
    [ "$tool" = memcheck ] || filter='*Attention*:*LayerNorm*:*Classifier*:-*AtScale*'
    if TESSERA_REQUIRE_CUDA=1 LD_LIBRARY_PATH="$libpath" limited 180 compute-sanitizer \
        --tool "$tool" --error-exitcode 9 .gpu/bin/test_cuda_ops --gtest_filter="$filter" \
        > "$logs/sanitize_$tool.log" 2>&1; then
      note "compute-sanitizer $tool: clean  $(grep -E 'ERROR SUMMARY' "$logs/sanitize_$tool.log" | tail -1)"
    else
      note "compute-sanitizer $tool: FAILED (exit $?, sanitize_$tool.log)  $(grep -E 'ERROR SUMMARY' "$logs/sanitize_$tool.log" | tail -1)"
      grep -m 20 -E '^========= ' "$logs/sanitize_$tool.log" || true
      status=1
    fi
  done
  return $status
}

# One bf16 training step of GPT-2 124M under Nsight Compute, each kernel's GPU time grouped by name.
run_profile() {
  if ! command -v ncu >/dev/null; then
    note "profile: no ncu on this machine"
    return 0
  fi
  # --peak-tflops: a stated rate keeps the bench's own GEMM timing out of the profile
  LD_LIBRARY_PATH="$libpath" limited 240 ncu --clock-control none \
    --metrics gpu__time_duration.sum --csv .gpu/tessera bench train \
    --config configs/gpt2-124m.yaml --set train.precision=bf16 --steps 1 --warmup 0 \
    --peak-tflops 1000 > "$logs/ncu_step.csv" 2> "$logs/ncu_step.err" || {
    note "profile: ncu FAILED (exit $?)  $(tail -3 "$logs/ncu_step.err")"
    return 1
  }
  python3 bench/kernel_times.py "$logs/ncu_step.csv" > "$logs/kernel_times.txt"
  note "profile (ncu, one bf16 step, kernels alone):"$'\n'"$(head -30 "$logs/kernel_times.txt")"
}

# The attention kernels alone at GPT-2 124M's shape: Tessera's variants, then PyTorch's SDPA
# backends, as one table (bench/attention_table.py); then Nsight Compute's details of the
# tensor-core attention kernels of one bf16 step's last layer
# (the 12 forwards come first, then each layer's D and dk/dv, which makes dq too at GPT-2's head
# size 64 (kDqInDkv), from the last: skipping 11 leaves forward, D, dk/dv of layer 12):
# occupancy and its limits, throughput, cycles per issue.
run_attention() {
  local result
  LD_LIBRARY_PATH="$libpath" limited 60 .gpu/bench_attention_cuda > "$logs/attention_bench.jsonl" \
    2>&1 || {
    result=$?
    echo "bench_attention_cuda: exit $result" >> "$logs/attention_bench.jsonl"
    timed_out "$result" "$logs/attention_bench.jsonl" && hung=bench_attention_cuda
  }
  if [ -n "$hung" ]; then
    note "attention: bench_attention_cuda ran out of time; PyTorch's side and ncu skipped"
    return 1
  fi
  PYTHONUNBUFFERED=1 limited 120 python3 bench/pytorch_attention.py >> "$logs/attention_bench.jsonl" \
    2>"$logs/pytorch_attention.err" || echo "pytorch_attention: exit $? $(tail -1 "$logs/pytorch_attention.err")" \
    >> "$logs/attention_bench.jsonl"
  note "attention alone (bench_attention_cuda, bench/pytorch_attention.py):"$'\n'"$(python3 bench/attention_table.py < "$logs/attention_bench.jsonl")"
  # The operation graph PyTorch (cudnn-frontend) builds for cuDNN's causal SDPA, forward and
  # backward, as cuDNN's own log records each backend call: the facts a Tessera cuDNN engine
  # would be written from (logs.tar.gz: cudnn_api.log, cudnn_frontend.log).
  CUDNN_LOGLEVEL_DBG=3 CUDNN_LOGDEST_DBG="$logs/cudnn_api.log" CUDNN_FRONTEND_LOG_INFO=1 \
    CUDNN_FRONTEND_LOG_FILE="$logs/cudnn_frontend.log" limited 60 python3 bench/pytorch_attention.py \
    --backends cudnn --batch 1 --heads 2 --seq 256 --reps 1 > "$logs/cudnn_logged.jsonl" 2>&1 || true
  note "cuDNN's SDPA graph logged: $(wc -c < "$logs/cudnn_api.log" 2>/dev/null || echo 0) bytes (cudnn_api.log), $(tail -1 "$logs/cudnn_logged.jsonl" | cut -c1-160)"
  if ! command -v ncu >/dev/null; then
    note "attention: no ncu on this machine"
    return 0
  fi
  LD_LIBRARY_PATH="$libpath" limited 180 ncu --clock-control none -k regex:_tc_kernel \
    --launch-skip 11 --launch-count 3 --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats .gpu/tessera bench train --config configs/gpt2-124m.yaml \
    --set train.precision=bf16 --steps 1 --warmup 0 --peak-tflops 1000 \
    > "$logs/ncu_attention.txt" 2>&1 || {
    note "attention: ncu FAILED (exit $?)  $(tail -3 "$logs/ncu_attention.txt")"
    return 1
  }
  note "attention kernels (ncu):"$'\n'"$(grep -E '_tc_kernel<|Duration|Registers Per Thread|Occupancy|Block Limit|Throughput|Shared Memory Per Block|Warp Cycles Per Issued' \
    "$logs/ncu_attention.txt" | sed -E 's/\(anonymous namespace\):://; s/\(tessera::.*//' | head -80)"
}

case "${1:-}" in
  build) build ;;
  run)
    [ -d .gpu/bin ] || { echo "no .gpu/bin: run 'scripts/gpu_check.sh build' first and carry .gpu" >&2; exit 1; }
    shift
    parts=("$@")
    ((${#parts[@]})) || parts=(tests bench)
    for part in "${parts[@]}"; do
      case $part in
        tests | bench | tessera | pytorch | sanitize | profile | attention) ;;
        *) echo "usage: scripts/gpu_check.sh run [tests|bench|tessera|pytorch|sanitize|profile|attention]..." >&2; exit 2 ;;
      esac
    done
    out=${OUT:-.gpu/out}
    logs=/tmp/tessera-gpu/logs
    budget=${GPU_CHECK_BUDGET_S:-100000}
    rm -rf "$logs"
    mkdir -p "$out" "$logs"
    tar -C /tmp/tessera-gpu -xJf .gpu/lib.tar.xz
    libpath=$(library_path /tmp/tessera-gpu/lib)
    summary="" status=0
    nvidia-smi > "$logs/nvidia-smi.txt" 2>&1 || true
    note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
    LD_LIBRARY_PATH="$libpath" ldd .gpu/bin/* .gpu/tessera .gpu/bench_attention_cuda | grep 'not found' | sort -u || true
    hung=""
    for part in "${parts[@]}"; do
      if [ -n "$hung" ]; then
        note "$part: skipped ($hung ran out of time: a kernel that never ends would stop this too)"
        continue
      fi
      "run_$part" || status=1
      tar -C "$logs" -czf "$out/logs.tar.gz" .
    done
    echo "$summary"
    exit $status
    ;;
  *)
    echo "usage: scripts/gpu_check.sh build | run [tests|bench|tessera|pytorch|sanitize|profile|attention]..." >&2
    exit 2
    ;;
esac
