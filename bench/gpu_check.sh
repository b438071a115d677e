#!/bin/bash
# One GPU-machine session in one call: the GPU tests (default kernels, then the DSA / HISA / MISA /
# paged tests again on the v1 logits kernels), the side-by-side prefill (ws vs v1) and decode (v1
# vs TMA) benchmarks, the top-k beside torch.topk, HISA / MISA / MISA-dagger decode beside DSA, and
# compute-sanitizer memcheck and racecheck. Every step has its own time limit, so a hang costs one
# step, not the session, and output streams as it comes.
#
#   bench/gpu_check.sh prepare BUILD_DIR [DEST]   on the build machine: copies test_cuda,
#                                                 indexlab_bench, indexlab, bench/torch_topk.py
#                                                 and the shared libraries a bare Ubuntu 24.04
#                                                 GPU machine lacks into DEST (default .carry)
#   bench/gpu_check.sh run [DIR] [OUT] [STEPS]    on the GPU machine, from DIR (default: where
#                                                 the script lies); logs go to OUT (default $OUT
#                                                 or ./gpu_check_out); STEPS, an extended regex,
#                                                 runs only the steps whose names match (default:
#                                                 all). `gpu_check.sh steps` lists them.
#   bench/gpu_check.sh ab FILTER ROUNDS VARIANT...
#                                                 on the GPU machine, from where the script lies:
#                                                 the indexlab_bench rows matching FILTER for every
#                                                 VARIANT in turn, ROUNDS times (alternated, so a
#                                                 clock that drifts shows in every variant alike).
#                                                 VARIANT is TAG=BINARY or TAG=BINARY,VAR=VALUE,...
#                                                 (environment for that binary). Logs go to OUT
#                                                 (default $OUT or ./gpu_check_out) as
#                                                 ab_TAG_ROUND.log; last, one line a row with every
#                                                 variant's times.
#
# On an H200 all of it takes more than one 600 s device call (a whole run ran out of time): split, e.g.
# STEPS='^(test|bench)' then '^(memcheck|racecheck)'. An A/B call, e.g. main's previous binary
# (copied to .carry/old/) against the new one with and without a switch:
#   .carry/gpu_check.sh ab 'BM_CudaPrefillCausal/S:32768/logits_only:0/ws:1/' 2 \
#     old=old/indexlab_bench new=./indexlab_bench off=./indexlab_bench,INDEXLAB_DECODE_HINT=0
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
  run | steps)
    dir=${2:-$(dirname "$0")}
    out=${3:-${OUT:-./gpu_check_out}}
    only=${4:-.}
    listing=0
    [ "$cmd" = steps ] && listing=1
    if [ $listing = 0 ]; then
      mkdir -p "$out"
      cd "$dir" || exit 2
      export LD_LIBRARY_PATH=$PWD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
      nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
    fi
    wanted() {  # wanted NAME LIMIT: whether the step runs (prints it instead under `steps`)
      if [ $listing = 1 ]; then
        echo "$1 (limit ${2}s)"
        return 1
      fi
      [[ $1 =~ $only ]]
    }
    step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.log, show the tail
      local name=$1 limit=$2
      shift 2
      wanted "$name" "$limit" || return 0
      echo "== $name (limit ${limit}s)"
      timeout "$limit" "$@" > "$out/$name.log" 2>&1
      local rc=$?
      echo "rc=$rc$([ $rc = 124 ] && echo ' (timed out)')"
      grep -E '^\[  FAILED|Failure|ERROR SUMMARY|RACECHECK SUMMARY' "$out/$name.log" | sort -u | head -8
      tail -3 "$out/$name.log"
    }
    bench() {  # bench NAME SECONDS FILTER: indexlab_bench rows matching FILTER, logged and shown
      local name=$1 limit=$2 filter=$3
      wanted "$name" "$limit" || return 0
      echo "== $name (limit ${limit}s)"
      timeout "$limit" ./indexlab_bench --benchmark_min_time=0.3 --benchmark_filter="$filter" > "$out/$name.log" 2>&1
      local rc=$?
      echo "rc=$rc$([ $rc = 124 ] && echo ' (timed out)')"
      grep -E '^BM_|rror' "$out/$name.log" | sed 's/min_time:0.[0-9]*\///'
    }
    step test_cuda 240 ./test_cuda --gtest_brief=1
    # The DSA / HISA / gather / MISA / paged tests again on the v1 kernels (logits_kernel for
    # prefill and for decode), which the differential tests judge the defaults against.
    step test_cuda_v1 300 env INDEXLAB_LOGITS=v1 INDEXLAB_DECODE=v1 ./test_cuda --gtest_brief=1 \
      --gtest_filter='Sm90Dsa*:Sm90Hisa*:Sm90Gather*:Sm90Misa*:Sm90Paged*'
    # Prefill (ws: default, v1: logits_kernel) and bf16 paged decode, one process.
    bench bench_prefill 180 'BM_CudaCeiling|BM_CudaPrefillCausal(Bf16)?/S:(8192|32768)/|BM_CudaDecodePagedBf16'
    # fp8 paged decode, v1 (tma:0) beside TMA (the default, tma:1), twice; the top-k alone.
    bench bench_decode1 60 'BM_CudaCeilingCopy|BM_CudaDecodePaged/'
    bench bench_decode2 60 'BM_CudaCeilingCopy|BM_CudaDecodePaged/|BM_CudaTopk'
    step bench_torch_topk 60 python3 torch_topk.py
    # HISA (32K, 64K), MISA and MISA-dagger (64K) decode, each beside DSA.
    bench bench_sparse_decode 120 'BM_SparseDecode/.*/ctx:(32768|65536)'
    step memcheck 200 compute-sanitizer --tool memcheck ./test_cuda \
      --gtest_filter='Sm90Dsa.Fp8_TileBoundaries:Sm90Dsa.Fp8_V1LogitsKernel:Sm90DsaBf16.Bf16_TileBoundaries:Sm90Paged.Fp8_NextN1to4_OutOfOrderPages:Sm90PagedBf16.Bf16_NextN1to4_OutOfOrderPages'
    step memcheck_tma_topk 150 compute-sanitizer --tool memcheck ./test_cuda \
      --gtest_filter='Sm90Paged.Fp8_TmaDecodeKernel:Sm90Topk.*:Sm90Gather.TileMode*'
    step racecheck 300 compute-sanitizer --tool racecheck ./test_cuda \
      --gtest_filter='Sm90Dsa.Fp8_TileBoundaries:Sm90Dsa.Fp8_EmptyRangesAndPackedBatches:Sm90Paged.Fp8_NextN1to4_OutOfOrderPages'
    step racecheck_tma 300 compute-sanitizer --tool racecheck ./test_cuda \
      --gtest_filter='Sm90Paged.Fp8_TmaDecodeKernel:Sm90Gather.TileMode*'
    ;;
  ab)
    filter=${2:-}
    rounds=${3:-}
    if [ -z "$filter" ] || ! [[ $rounds =~ ^[1-9][0-9]*$ ]] || [ $# -lt 4 ]; then
      echo "usage: gpu_check.sh ab FILTER ROUNDS TAG=BINARY[,VAR=VALUE...]..." >&2
      exit 2
    fi
    shift 3
    out=${OUT:-./gpu_check_out}
    mkdir -p "$out" && out=$(cd "$out" && pwd)
    tags=()
    for v in "$@"; do
      tag=${v%%=*}
      if [ "$tag" = "$v" ] || ! [[ $tag =~ ^[A-Za-z0-9_.-]+$ ]]; then
        echo "gpu_check.sh ab: variant '$v' is not TAG=BINARY[,VAR=VALUE...]" >&2
        exit 2
      fi
      tags+=("$tag")
    done
    cd "$(dirname "$0")" || exit 2
    export LD_LIBRARY_PATH=$PWD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    command -v nvidia-smi > /dev/null &&
      nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader
    for r in $(seq 1 "$rounds"); do
      for v in "$@"; do
        tag=${v%%=*}
        rest=${v#*=}
        bin=${rest%%,*}
        envs=()
        [[ $rest == *,* ]] && IFS=',' read -r -a envs <<< "${rest#*,}"
        echo "== $tag, round $r: $bin ${envs[*]}"
        env ${envs[@]+"${envs[@]}"} timeout 150 "$bin" --benchmark_filter="$filter" > "$out/ab_${tag}_$r.log" 2>&1
        rc=$?
        [ $rc = 0 ] || echo "rc=$rc$([ $rc = 124 ] && echo ' (timed out)')"
      done
    done
    # One line a benchmark row: every variant's times, round by round.
    for tag in "${tags[@]}"; do
      for r in $(seq 1 "$rounds"); do
        sed -E 's#/(min_time|iterations):[^/ ]*##; s#/manual_time##' "$out/ab_${tag}_$r.log" |
          awk -v t="$tag" '/^BM_/ { print $1 "\t" t "\t" $2 " " $3 }'
      done
    done | awk -F'\t' '
      !($1 in seen) { seen[$1] = 1; order[++n] = $1 }
      !(($1, $2) in have) { have[$1, $2] = 1; tg[$1] = tg[$1] " | " $2 ":" }
      { tg[$1] = tg[$1] " " $3 }
      END { for (i = 1; i <= n; ++i) print order[i] tg[order[i]] }'
    ;;
  *)
    sed -n '2,32p' "$0"
    exit 2
    ;;
esac
