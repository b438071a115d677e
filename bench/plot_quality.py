#!/usr/bin/env python3
"""Plots the CSV written by `indexlab quality --csv FILE` as one panel per workload:
recall@K against DSA versus context length, for HISA and for MISA / MISA-dagger at each h.

    python3 bench/plot_quality.py quality.csv quality.png     (needs python3-matplotlib)
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    rows = list(csv.DictReader(open(sys.argv[1])))
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.8), sharey=True, squeeze=False)
    for ax, wl in zip(axes[0], workloads):
        series = defaultdict(list)
        for r in rows:
            if r["workload"] != wl:
                continue
            label = "hisa" if r["path"] == "hisa" else f'{r["path"]} h={r["active_heads"]}'
            series[label].append((int(r["context"]), float(r["mean_recall"])))
        hs = sorted({int(r["active_heads"]) for r in rows if r["path"] != "hisa"})
        colour = {h: plt.cm.viridis(i / max(1, len(hs) - 1) * 0.9) for i, h in enumerate(hs)}
        for label, pts in sorted(series.items(), key=lambda kv: (kv[0] != "hisa", kv[0])):
            pts.sort()
            if label == "hisa":
                kw = dict(color="black", marker="o", linestyle="-")
            else:
                h = int(label.split("=")[1])
                kw = dict(color=colour[h], linestyle="-" if label.startswith("misa_dagger") else "--")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, linewidth=1.2, markersize=3, **kw)
        ax.set_xscale("log", base=2)
        ax.set_title(wl)
        ax.set_xlabel("context (keys)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean recall@2048 vs DSA")
    axes[0][-1].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
