#!/usr/bin/env python3
"""A DSA indexer written in NumPy, as "another program" whose output indexlab verifies.

Reads a problem exported by `indexlab export` (problem.json + inputs.npz), computes
score[i, j] = sum_h w[i,h] * relu(s[j] * dot(q[i,h], k[j])) over ks[i] <= j < ke[i] in float64,
rounds to float32, keeps the top K (score descending, index ascending, -1 padding) and writes
indices (relative to ks) and logits to out.npz.

    python3 examples/numpy_dsa.py DIR OUT.npz [--bug off_by_one]
"""
import json
import sys

import numpy as np


def e4m3_table():
    t = np.zeros(256, dtype=np.float64)
    for c in range(256):
        sign = -1.0 if c & 0x80 else 1.0
        e, m = (c >> 3) & 0xF, c & 0x7
        if e == 0xF and m == 0x7:
            t[c] = np.nan
        elif e == 0:
            t[c] = sign * m * 2.0 ** -9
        else:
            t[c] = sign * (1 + m / 8) * 2.0 ** (e - 7)
    return t


def decode(a):
    """float32 as is; BF16 ('<V2') and float8_e4m3fn codes ('<V1') decoded exactly."""
    if a.dtype.kind == "V" and a.dtype.itemsize == 2:
        return (a.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if a.dtype.kind == "V" and a.dtype.itemsize == 1:
        return e4m3_table()[a.view(np.uint8)]
    return a.astype(np.float64)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    d, out = sys.argv[1], sys.argv[2]
    bug = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--bug" else None
    problem = json.load(open(f"{d}/problem.json"))
    if problem["path"] != "dsa" or problem.get("layout", "flat") != "flat":
        print("this example computes flat DSA only", file=sys.stderr)
        return 2
    t = np.load(f"{d}/inputs.npz")
    q, k, w = decode(t["q"]), decode(t["k"]), t["w"].astype(np.float64)
    ks, ke = t["ks"].astype(np.int64), t["ke"].astype(np.int64)
    s = t["k_scale"].astype(np.float64) if "k_scale" in t.files else np.ones(k.shape[0])
    nq, K, nk = q.shape[0], int(problem["k"]), k.shape[0]
    idx = np.full((nq, K), -1, dtype=np.int32)
    logits = np.full((nq, nk), -np.inf, dtype=np.float32)
    for i in range(nq):
        a, b = int(ks[i]), int(ke[i])
        if bug == "off_by_one":
            a = min(a + 1, b)
        dots = k[a:b] @ q[i].T                              # [n, H], exact for fp8 inputs
        score = (np.maximum(s[a:b, None] * dots, 0.0) @ w[i]).astype(np.float32)
        logits[i, a:b] = score
        order = np.lexsort((np.arange(a, b), -score.astype(np.float64)))[:K]
        idx[i, :len(order)] = order + (a - int(ks[i]))
    np.savez(out, indices=idx, logits=logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
