#!/usr/bin/env python3
"""torch.topk baseline for the sm90 top-k: rows x cols random fp32, K largest, sorted=True.

Times each call with CUDA events (median of many runs after warm-up), rotating among several
input buffers so that repeated calls read device memory rather than L2 (the same rotation as
BM_CudaTopk in cuda/bench.cu). Prints one line per shape: 'torch.topk rows x cols K: median ms'.
"""
import argparse
import statistics

import torch


def time_topk(rows, cols, k, sets, warmup, iters):
    g = torch.Generator(device="cuda").manual_seed(11)
    xs = [torch.rand(rows, cols, device="cuda", generator=g) * 4.0 - 2.0 for _ in range(sets)]
    for i in range(warmup):
        torch.topk(xs[i % sets], k, dim=1, sorted=True)
    torch.cuda.synchronize()
    times = []
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(iters):
        x = xs[i % sets]
        a.record()
        torch.topk(x, k, dim=1, sorted=True)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    # sanity: the selection is the true top-k of one row
    v, _ = torch.topk(xs[0], k, dim=1, sorted=True)
    ref = torch.sort(xs[0][0], descending=True).values[:k]
    assert torch.equal(v[0], ref), "torch.topk disagrees with torch.sort"
    return statistics.median(times), min(times), max(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--cols", type=int, default=131072)
    ap.add_argument("--k", type=int, default=2048)
    ap.add_argument("--sets", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=300)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(0)}")
    med, lo, hi = time_topk(a.rows, a.cols, a.k, a.sets, a.warmup, a.iters)
    print(f"torch.topk {a.rows} x {a.cols} K={a.k} sorted=True: median {med:.4f} ms "
          f"(min {lo:.4f}, max {hi:.4f}, {a.iters} runs, {a.sets} rotated buffers)")


if __name__ == "__main__":
    main()
