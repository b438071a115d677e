#!/bin/bash
# One GPU-machine session in one call: the GPU tests (default kernels, then the DSA / HISA / MISA /
# paged tests again on the v1 logits kernels), the side-by-side prefill (ws vs v1) and decode (v1
# vs TMA) benchmarks, DSA and MISA decode, and compute-sanitizer memcheck and racecheck on prefill and paged decode. Every step
# has its own time limit, so a hang costs one step, not the session, and output streams as it
# comes.
#
#   bench/gpu_check.sh prepare BUILD_DIR [DEST]   on the build machine: copies test_cuda,
#                                                 indexlab_bench, indexlab, bench/torch_topk.py
#                                                 and the shared libraries a bare Ubuntu 24.04
#                                                 GPU machine lacks into DEST (default .carry)
#   bench/gpu_check.sh run [DIR] [OUT]            on the GPU machine, from DIR (default: where
#                                                 the script lies); logs go to OUT (default $OUT
#                                                 or ./gpu_check_out)
set -u
cmd=${1:-}
case "$cmd" in
  prepare)
    build=${2:?usage: gpu_check.sh prepare BUILD_DIR [DEST]}
    dest=${3:-.carry}
    mkdir -p "$dest"
    cp "$build/tests/test_cuda" "$build/bench/indexlab_bench" "$build/cli/indexlab" "$dest/"
    cp "$(dirname "$0")/torch_topk.py" "$(dirname "$0")/gpu_check.sh" "$dest/"
    for lib in libbenchmark.so.1debian libgomp.so.1; do
      path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
      if [ -n "$path" ]; then cp "$path" "$dest/"; else echo "warning: $lib not found" >&2; fi
    done
    echo "prepared $dest: $(ls "$dest" | tr '\n' ' ')"
    ;;
  run)
    dir=${2:-$(dirname "$0")}
    out=${3:-${OUT:-./gpu_check_out}}
    mkdir -p "$out"
    cd "$dir" || exit 2
    export LD_LIBRARY_PATH=$PWD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
    step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.log, show the tail
      local name=$1 limit=$2
      shift 2
      echo "== $name (limit ${limit}s)"
      timeout "$limit" "$@" > "$out/$name.log" 2>&1
      local rc=$?
      echo "rc=$rc$([ $rc = 124 ] && echo ' (timed out)')"
      grep -E '^\[  FAILED|Failure|ERROR SUMMARY|RACECHECK SUMMARY' "$out/$name.log" | sort -u | head -8
      tail -3 "$out/$name.log"
    }
    step test_cuda 240 ./test_cuda --gtest_brief=1
    # The DSA / HISA / gather / MISA / paged tests again on the v1 kernels (logits_kernel for
    # prefill and for decode), which the differential tests judge the defaults against.
    step test_cuda_v1 300 env INDEXLAB_LOGITS=v1 INDEXLAB_DECODE=v1 ./test_cuda --gtest_brief=1 \
      --gtest_filter='Sm90Dsa*:Sm90Hisa*:Sm90Gather*:Sm90Misa*:Sm90Paged*'
    echo "== prefill (ws: default, v1: logits_kernel) and bf16 paged decode (one process)"
    timeout 180 ./indexlab_bench --benchmark_min_time=0.3 \
      --benchmark_filter='BM_CudaCeiling|BM_CudaPrefillCausal(Bf16)?/S:(8192|32768)/|BM_CudaDecodePagedBf16' 2>&1 |
      grep -E '^BM_|rror' | sed 's/min_time:0.[0-9]*\///' | tee "$out/bench_prefill.txt"
    echo "== fp8 paged decode: v1 (tma:0), TMA (default, tma:1) (one process, twice)"
    for i in 1 2; do
      timeout 60 ./indexlab_bench --benchmark_min_time=0.3 \
        --benchmark_filter='BM_CudaCeilingCopy|BM_CudaDecodePaged/' 2>&1 |
        grep -E '^BM_|rror' | sed 's/min_time:0.[0-9]*\///' | tee -a "$out/bench_decode.txt"
    done
    step memcheck 200 compute-sanitizer --tool memcheck ./test_cuda \
      --gtest_filter='Sm90Dsa.Fp8_V1LogitsKernel:Sm90DsaBf16.Bf16_TileBoundaries:Sm90Paged.Fp8_NextN1to4_OutOfOrderPages:Sm90PagedBf16.Bf16_NextN1to4_OutOfOrderPages'
    echo "== HISA (32K, 64K), MISA and MISA-dagger (64K) decode, each beside DSA"
    timeout 120 ./indexlab_bench --benchmark_min_time=0.2 \
      --benchmark_filter='BM_SparseDecode/.*/ctx:(32768|65536)' 2>&1 |
      grep -E '^BM_|rror' | sed 's/min_time:0.[0-9]*\///' | tee -a "$out/bench_sparse_decode.txt"
    step memcheck_tma 150 compute-sanitizer --tool memcheck ./test_cuda \
      --gtest_filter='Sm90Paged.Fp8_TmaDecodeKernel'
    step racecheck 300 compute-sanitizer --tool racecheck ./test_cuda \
      --gtest_filter='Sm90Dsa.Fp8_TileBoundaries:Sm90Dsa.Fp8_EmptyRangesAndPackedBatches:Sm90Paged.Fp8_NextN1to4_OutOfOrderPages'
    step racecheck_tma 300 compute-sanitizer --tool racecheck ./test_cuda \
      --gtest_filter='Sm90Paged.Fp8_TmaDecodeKernel'
    ;;
  *)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
