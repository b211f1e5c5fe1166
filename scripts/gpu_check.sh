#!/usr/bin/env bash
# The CUDA tests and the GPU benchmark on a machine with a GPU and the CUDA 13 toolkit but none of
# the Debian packages: the device machine (nvcc, PyTorch; no MPI, gRPC, yaml-cpp, OpenBLAS or
# GoogleTest). The binaries are built here and carried there:
#   scripts/gpu_check.sh build   here: builds the CUDA test binaries and `tessera` for any x86-64
#                                CPU and for sm_80 + sm_90 into build-gpu/, and packs them with the
#                                shared libraries the GPU machine lacks into .gpu/ (git-ignored)
#                                It also trains a small model here for 30 steps and keeps its
#                                checkpoint and, from `tessera generate --logits-out`, its logits
#   scripts/gpu_check.sh run     there: runs every test binary in .gpu/bin, opens that checkpoint
#                                in transformers (bench/hf_export_check.py), then the benchmark:
#                                the card's dense bf16 rate, GPT-2 124M training steps in Tessera
#                                and in PyTorch (fp32 eager, bf16 eager, bf16 torch.compile). Logs
#                                and gtest XML go to $OUT (or .gpu/out); a summary is printed last.
#                                `run tests` or `run bench` runs one part (tests include the
#                                Hugging Face check).
#   scripts/gpu_check.sh run sanitize   there: compute-sanitizer over the CUDA op tests (memcheck
#                                on all of them; racecheck and synccheck on the attention kernels)
#   scripts/gpu_check.sh run profile    there: GPU time per kernel of one bf16 GPT-2 124M training
#                                step (Nsight Compute, bench/kernel_times.py)
# Neither of the last two runs by default: each takes minutes of device time.
# With the device tool: run(command="bash scripts/gpu_check.sh run", carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(test_caching_allocator test_cuda_ops test_gpt2_cuda test_train_cuda test_comm_nccl)
ompi_plugins=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3  # Debian 12's Open MPI components

build() {
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_NATIVE=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
  cmake --build build-gpu --target "${tests[@]}" tessera
  rm -rf .gpu
  mkdir -p .gpu/bin .gpu/lib
  for t in "${tests[@]}"; do cp "build-gpu/tests/$t" .gpu/bin/; done
  cp build-gpu/tessera .gpu/tessera
  # Libraries ldd resolves, except the C runtime (newer there), the driver, cuBLAS and NCCL (there
  # in the CUDA toolkit and PyTorch's nvidia-* wheels; far too large to carry: 64 MiB in all).
  # Open MPI's components too: test_comm_nccl bootstraps NCCL over MPI, and there it runs as a
  # singleton (no mpirun) with these loaded from the carried folder.
  cp -r "$ompi_plugins" .gpu/lib/openmpi3
  ldd .gpu/bin/* .gpu/tessera .gpu/lib/openmpi3/*.so | awk '/=> \//{print $3}' | sort -u |
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
  echo "carry .gpu ($(du -sh .gpu | cut -f1)): $(ls .gpu/bin | tr '\n' ' ') tessera"
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

run_tests() {
  local status=0 bin name result counts
  for bin in .gpu/bin/*; do
    name=$(basename "$bin")
    # TESSERA_REQUIRE_CUDA: a CUDA test fails instead of skipping when it finds no device.
    # An MPI test binary runs as a one-rank singleton: no mpirun, no orted, the carried components.
    if TESSERA_REQUIRE_CUDA=1 LD_LIBRARY_PATH="$libpath" OMPI_MCA_ess_singleton_isolated=1 \
        OMPI_MCA_mca_base_component_path=/tmp/tessera-gpu/lib/openmpi3 \
        OMPI_MCA_mca_base_component_show_load_errors=0 OMPI_ALLOW_RUN_AS_ROOT=1 \
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$bin" \
        --gtest_output="xml:$out/$name.xml" > "$out/$name.log" 2>&1; then
      result=passed
    else
      result="FAILED (exit $?)"
      status=1
    fi
    counts=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$out/$name.log" | tr '\n' ' ')
    summary+="$name: $result  $counts"$'\n'
    grep -E '^\[  FAILED  \]|Failure$|error' "$out/$name.log" | head -20 || true
  done
  if python3 bench/hf_export_check.py --checkpoint .gpu/hf/checkpoint \
      --logits .gpu/hf/logits.safetensors > "$out/hf_export.log" 2>&1; then
    summary+="hf_export_check: passed  $(tail -1 "$out/hf_export.log")"$'\n'
  else
    summary+="hf_export_check: FAILED  $(tail -3 "$out/hf_export.log")"$'\n'
    status=1
  fi
  return $status
}

run_bench() {
  local gpt2=(--n_layer 12 --n_embd 768 --n_head 12 --seq_len 1024 --batch 16 --vocab 50304
              --steps 10 --warmup 3 --device cuda)
  local peak line
  LD_LIBRARY_PATH="$libpath" .gpu/tessera bench gemm --size 8192 --steps 20 | tee "$out/gemm.log"
  peak=$(sed -n 's/.*"tflops":\([0-9.]*\).*/\1/p' "$out/gemm.log")
  summary+="dense bf16 GEMM 8192^3: $peak TFLOP/s"$'\n'
  for precision in fp32 bf16 fp16; do
    LD_LIBRARY_PATH="$libpath" .gpu/tessera bench train --config configs/gpt2-124m.yaml \
      --set train.precision=$precision --steps 10 --warmup 3 --peak-tflops "$peak" \
      > "$out/tessera_$precision.log" 2>&1 || true
    summary+="tessera $precision: $(tail -1 "$out/tessera_$precision.log")"$'\n'
  done
  for variant in "none" "bf16" "bf16 --compile"; do
    set -- $variant
    line=$(python3 bench/pytorch_gpt2.py "${gpt2[@]}" --amp "$@" 2>"$out/pytorch_$1_$#.err" |
           tee "$out/pytorch_$1_$#.log" | tail -1) || line="FAILED: $(tail -3 "$out/pytorch_$1_$#.err")"
    summary+="pytorch amp=$variant: $line"$'\n'
  done
}

# compute-sanitizer's memcheck over every CUDA op test, racecheck (shared-memory hazards) and
# synccheck over the attention kernels, which share tiles between warps.
run_sanitize() {
  local status=0 tool filter
  if ! command -v compute-sanitizer >/dev/null; then
    summary+="sanitize: no compute-sanitizer on this machine"$'\n'
    return 0
  fi
  for tool in memcheck racecheck synccheck; do
    filter='*'
    [ "$tool" = memcheck ] || filter='*Attention*'
    if TESSERA_REQUIRE_CUDA=1 LD_LIBRARY_PATH="$libpath" compute-sanitizer --tool "$tool" \
        --error-exitcode 9 .gpu/bin/test_cuda_ops --gtest_filter="$filter" \
        > "$out/sanitize_$tool.log" 2>&1; then
      summary+="compute-sanitizer $tool: clean  $(grep -E 'ERROR SUMMARY' "$out/sanitize_$tool.log" | tail -1)"$'\n'
    else
      summary+="compute-sanitizer $tool: FAILED (see sanitize_$tool.log)  $(grep -E 'ERROR SUMMARY' "$out/sanitize_$tool.log" | tail -1)"$'\n'
      grep -m 20 -E '^========= ' "$out/sanitize_$tool.log" || true
      status=1
    fi
  done
  return $status
}

# One bf16 training step of GPT-2 124M under Nsight Compute, each kernel's GPU time grouped by name.
run_profile() {
  if ! command -v ncu >/dev/null; then
    summary+="profile: no ncu on this machine"$'\n'
    return 0
  fi
  LD_LIBRARY_PATH="$libpath" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
    .gpu/tessera bench train --config configs/gpt2-124m.yaml --set train.precision=bf16 \
    --steps 1 --warmup 0 > "$out/ncu_step.csv" 2> "$out/ncu_step.err" || {
    summary+="profile: ncu FAILED  $(tail -3 "$out/ncu_step.err")"$'\n'
    return 1
  }
  python3 bench/kernel_times.py "$out/ncu_step.csv" | tee "$out/kernel_times.txt"
  summary+="profile (ncu, one bf16 step, kernels alone):"$'\n'"$(head -12 "$out/kernel_times.txt")"$'\n'
}

case "${1:-}" in
  build) build ;;
  run)
    [ -d .gpu/bin ] || { echo "no .gpu/bin: run 'scripts/gpu_check.sh build' first and carry .gpu" >&2; exit 1; }
    out=${OUT:-.gpu/out}
    mkdir -p "$out" /tmp/tessera-gpu
    tar -C /tmp/tessera-gpu -xJf .gpu/lib.tar.xz
    libpath=$(library_path /tmp/tessera-gpu/lib)
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
    summary="" status=0
    case "${2:-}" in
      "") run_tests || status=1; run_bench || status=1 ;;
      tests) run_tests || status=1 ;;
      bench) run_bench || status=1 ;;
      sanitize) run_sanitize || status=1 ;;
      profile) run_profile || status=1 ;;
      *) echo "usage: scripts/gpu_check.sh run [tests|bench|sanitize|profile]" >&2; exit 2 ;;
    esac
    head -12 "$out/nvidia-smi.txt" || true
    echo "$summary"
    exit $status
    ;;
  *)
    echo "usage: scripts/gpu_check.sh build | run [tests|bench|sanitize|profile]" >&2
    exit 2
    ;;
esac
