#!/usr/bin/env bash
# Fails when ptxas reports that it serialized a kernel's wgmma or injected warpgroup waits into it
# (C75xx "Potential Performance Loss: wgmma ...", "warpgroup.wait is injected"). Those kernels
# still compute the same bits, so no differential test notices: the TMA decode kernel ran a
# whole session serialized because a never-taken printf was a function call.
#
#   cuda/check_ptxas.sh NVCC SOURCE_ROOT FILE.cu...
#
# Each file is compiled for sm_90a to a throw-away cubin with the library's flags and ptxas -v.
set -uo pipefail
nvcc=${1:?usage: check_ptxas.sh NVCC SOURCE_ROOT FILE.cu...}
root=${2:?usage: check_ptxas.sh NVCC SOURCE_ROOT FILE.cu...}
shift 2
[ $# -gt 0 ] || { echo "check_ptxas: no .cu files given" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad=0
for f in "$@"; do
  log="$tmp/$(basename "$f").log"
  if ! "$nvcc" -DINDEXLAB_HAVE_CUDA=1 -I"$root" -O3 -DNDEBUG -arch=sm_90a \
      --expt-relaxed-constexpr -std=c++17 -cubin -Xptxas -v "$f" -o "$tmp/out.cubin" > "$log" 2>&1; then
    echo "check_ptxas: $f does not compile:" >&2
    tail -20 "$log" >&2
    bad=1
    continue
  fi
  if grep -qE 'C75[0-9][0-9].*(wgmma|warpgroup)|warpgroup\.wait is injected' "$log"; then
    echo "check_ptxas: $f: ptxas serialized wgmma or injected warpgroup waits:" >&2
    grep -E 'C75[0-9][0-9]' "$log" | sed 's/^/  /' >&2
    bad=1
  else
    echo "check_ptxas: $f: $(grep -c 'Compiling entry function' "$log") kernels, no wgmma serialization"
  fi
done
exit $bad
