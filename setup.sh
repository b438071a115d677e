#!/usr/bin/env bash
# Installs what indexlab needs (Debian/Ubuntu packages), builds it, and runs the main job:
# `indexlab verify` on the built-in workloads.
#   ./setup.sh             install missing packages, build into ./build, run indexlab verify
#   ./setup.sh --no-run    install and build only
#   BUILD_DIR=dir JOBS=n   build elsewhere / with n parallel jobs
set -euo pipefail
cd "$(dirname "$0")"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
run=1
for arg in "$@"; do
  case "$arg" in
    --no-run) run=0 ;;
    *) echo "usage: $0 [--no-run]" >&2; exit 2 ;;
  esac
done

packages=(cmake ninja-build g++ libeigen3-dev libgtest-dev libbenchmark-dev libcli11-dev
          nlohmann-json3-dev zlib1g-dev clang libclang-rt-14-dev python3-numpy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# CUDA kernels build when nvcc is on PATH (or in /usr/local/cuda/bin); nothing else needs it.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j "$JOBS"

if [ "$run" = 1 ]; then
  "$BUILD_DIR/cli/indexlab" verify
fi
