#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in their own build directory and runs each for
# a short time on the seed corpus of fuzz/corpus/<target>/. Exits non-zero when a target crashes,
# leaks, trips a sanitizer or breaks a round-trip property; the crashing input is kept under
# <build>/artifacts/<target>/.
#
#   fuzz/run_libfuzzer.sh [seconds per target, default 30] [target ...]
#   INDEXLAB_LIBFUZZER_BUILD=dir   build directory (default: build-libfuzzer at the repository root)
#   INDEXLAB_LIBFUZZER_JOBS=n      build jobs (default 2)
set -uo pipefail

SECS=${1:-30}
shift || true
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${INDEXLAB_LIBFUZZER_BUILD:-$ROOT/build-libfuzzer}
JOBS=${INDEXLAB_LIBFUZZER_JOBS:-2}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=(npy npz safetensors problem_json repro); fi

CXX_BIN=${CXX_FOR_LIBFUZZER:-$(command -v clang++ || command -v clang++-14 || true)}
if [ -z "$CXX_BIN" ]; then echo "run_libfuzzer.sh: clang++ not found" >&2; exit 2; fi

echo "== configure ($BUILD)"
mkdir -p "$BUILD"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_BIN" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DINDEXLAB_LIBFUZZER=ON -DINDEXLAB_ENABLE_CUDA=OFF -DINDEXLAB_BUILD_TESTS=OFF -DINDEXLAB_BUILD_BENCH=OFF \
  >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log"; echo "run_libfuzzer.sh: configure failed" >&2; exit 2; }
echo "== build"
bins=()
for t in "${TARGETS[@]}"; do bins+=("libfuzzer_$t"); done
ninja -C "$BUILD" -j"$JOBS" "${bins[@]}" || { echo "run_libfuzzer.sh: build failed" >&2; exit 2; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${TARGETS[@]}"; do
  work="$BUILD/corpus/$t"
  art="$BUILD/artifacts/$t"
  mkdir -p "$work" "$art"
  seeds="$ROOT/fuzz/corpus/$t"
  [ -d "$seeds" ] || seeds=""
  echo "== libfuzzer_$t: ${SECS}s"
  log="$BUILD/libfuzzer_$t.log"
  "$BUILD/fuzz/libfuzzer_$t" -max_total_time="$SECS" -max_len=65536 -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" $seeds >"$log" 2>&1
  rc=$?
  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" "$log" | tail -4
  if [ $rc -ne 0 ]; then
    echo "!! libfuzzer_$t failed (exit $rc); log $log, inputs in $art" >&2
    grep -E "ERROR|SUMMARY|runtime error|property failed" "$log" | head -10 >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "run_libfuzzer.sh: failures in: ${failed[*]}" >&2
  exit 1
fi
echo "run_libfuzzer.sh: all ${#TARGETS[@]} targets ran clean"
