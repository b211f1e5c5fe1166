#!/usr/bin/env bash
# Installs Tessera's build and test dependencies from Debian 12 packages (only the missing ones).
# The CUDA toolkit is not a Debian package: when /usr/local/cuda/bin/nvcc (or nvcc on PATH) exists,
# CMake builds the CUDA backend too; without it Tessera builds for CPU only.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-openmp-dev libopenmpi-dev openmpi-bin
  libyaml-cpp-dev nlohmann-json3-dev libboost-program-options-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libgtest-dev libgmock-dev libbenchmark-dev clang-format
  python3-torch python3-numpy
)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} Debian packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
