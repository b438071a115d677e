#!/usr/bin/env bash
# End-to-end file-based verification: indexlab exports a workload, the NumPy program in this
# folder computes DSA from the files, and indexlab verifies its output; a planted off-by-one in
# ks must be caught. Exits 77 (skipped) when python3 with NumPy is missing.
#   examples/file_based_verify.sh path/to/indexlab [python3]
set -euo pipefail
indexlab=$1
py=${2:-python3}
if ! "$py" -c 'import numpy' 2>/dev/null; then
  echo "SKIP: $py with NumPy is not available (apt-get install python3-numpy)"
  exit 77
fi
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for prec in fp8 bf16 fp32; do
  "$indexlab" export --workload needles --precision "$prec" --nq 6 --nk 700 --heads 8 --dim 32 --topk 64 --out "$work/p"
  "$py" "$here/numpy_dsa.py" "$work/p" "$work/out.npz"
  "$indexlab" verify --problem "$work/p/problem.json" --inputs "$work/p/inputs.npz" --candidate "$work/out.npz"
done
# With K above the visible count every key is selected, so dropping key ks shows in the selection
# as well as in the logits' -inf pattern.
"$indexlab" export --workload gaussian --precision fp8 --nq 4 --nk 300 --heads 8 --dim 32 --topk 512 --out "$work/p"
"$py" "$here/numpy_dsa.py" "$work/p" "$work/bad.npz" --bug off_by_one
if "$indexlab" verify --problem "$work/p/problem.json" --inputs "$work/p/inputs.npz" --candidate "$work/bad.npz" \
     --repro-dir "$work/repro"; then
  echo "FAIL: the off-by-one candidate was not caught"
  exit 1
fi
"$indexlab" replay "$work/repro" > "$work/replay.txt" && { echo "FAIL: replay passed"; exit 1; }
grep -q "missing key 0" "$work/replay.txt" || { cat "$work/replay.txt"; echo "FAIL: diagnosis does not name key 0"; exit 1; }
grep -q -- "-inf pattern BROKEN" "$work/replay.txt" || { cat "$work/replay.txt"; echo "FAIL: -inf pattern not flagged"; exit 1; }
echo "file-based verification: numpy candidate passes, off-by-one caught and replayed"
