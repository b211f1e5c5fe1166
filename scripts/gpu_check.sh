#!/usr/bin/env bash
# The CUDA tests (and, once built, the GPU benchmark) on a machine with a GPU and the CUDA 13
# toolkit but none of the Debian packages: the device machine (nvcc, PyTorch; no MPI, gRPC,
# yaml-cpp, OpenBLAS or GoogleTest). The binaries are built here and carried there:
#   scripts/gpu_check.sh build   here: builds the CUDA test binaries for any x86-64 CPU and for
#                                sm_80 + sm_90 into build-gpu/, and copies them with the shared
#                                libraries the GPU machine may lack into .gpu/ (git-ignored)
#   scripts/gpu_check.sh run     there: runs every binary in .gpu/bin; logs and gtest XML go to
#                                $OUT (or .gpu/out), a summary table is printed last
# With the device tool: run(command="bash scripts/gpu_check.sh run", carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(test_caching_allocator test_cuda_ops test_gpt2_cuda test_train_cuda)

case "${1:-}" in
  build)
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTESSERA_NATIVE=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
    cmake --build build-gpu --target "${targets[@]}"
    rm -rf .gpu
    mkdir -p .gpu/bin .gpu/lib
    for t in "${targets[@]}"; do cp "build-gpu/tests/$t" .gpu/bin/; done
    # Libraries ldd resolves, except the C runtime (newer there), the driver, cuBLAS and NCCL (there
    # in the CUDA toolkit and PyTorch's nvidia-* wheels; far too large to carry: 64 MiB in all).
    ldd .gpu/bin/* | awk '/=> \//{print $3}' | sort -u |
      grep -v -E '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|libcuda|libcublas[A-Za-z]*|libnccl)\.so' |
      while read -r lib; do cp -L "$lib" .gpu/lib/; done
    echo "carry .gpu ($(du -sh .gpu | cut -f1)): $(ls .gpu/bin | tr '\n' ' ')"
    ;;
  run)
    [ -d .gpu/bin ] || { echo "no .gpu/bin: run 'scripts/gpu_check.sh build' first and carry .gpu" >&2; exit 1; }
    out=${OUT:-.gpu/out}
    mkdir -p "$out"
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
    # cuBLAS from the toolkit or from PyTorch's nvidia-* wheels, whichever is there.
    libs="$PWD/.gpu/lib"
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null); do
      [ -d "$d" ] && libs="$libs:$d"
    done
    status=0
    summary=""
    for bin in .gpu/bin/*; do
      name=$(basename "$bin")
      # TESSERA_REQUIRE_CUDA: a CUDA test fails instead of skipping when it finds no device.
      if TESSERA_REQUIRE_CUDA=1 LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}" "$bin" \
          --gtest_output="xml:$out/$name.xml" \
          > "$out/$name.log" 2>&1; then
        result=passed
      else
        result="FAILED (exit $?)"
        status=1
      fi
      counts=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$out/$name.log" | tr '\n' ' ')
      summary+="$name: $result  $counts"$'\n'
      grep -E '^\[  FAILED  \]|Failure|error' "$out/$name.log" | head -20 || true
    done
    head -12 "$out/nvidia-smi.txt" || true
    echo "$summary"
    exit $status
    ;;
  *)
    echo "usage: scripts/gpu_check.sh build|run" >&2
    exit 2
    ;;
esac
