#!/usr/bin/env bash
# Runs the whole test suite of a build made by ./setup.sh: every GoogleTest binary through ctest
# (GPU tests skip with a reason where there is no Hopper GPU), then a short libFuzzer run of
# every file parser (skipped with a reason where clang's fuzzer runtime is missing).
#   ./run_tests.sh                 BUILD_DIR=build, FUZZ_SECONDS=30 per parser
set -euo pipefail
cd "$(dirname "$0")"
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
if [ ! -f "$BUILD_DIR/CTestTestfile.cmake" ]; then
  echo "run_tests: no build in $BUILD_DIR; run ./setup.sh --no-run first" >&2
  exit 2
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
if [ -x fuzz/run_libfuzzer.sh ]; then
  fuzz/run_libfuzzer.sh "${FUZZ_SECONDS:-30}"
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"
