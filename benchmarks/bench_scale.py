"""Scale benchmark (issue 14): cost against requests and against replicas.

The bench_sim scenario (Llama-2-7B on H100s, Sarathi, splitwise conversation
lengths) behind a round-robin router, Poisson at 8 QPS per replica so every
replica sees the same load. Each point is one whole ``vidur run`` process in a
fresh wrapper (so its peak RSS is its own): wall seconds, requests per wall
second, peak RSS. Two curves:

* requests (``--requests``, default 10k 20k 50k) on ``--fixed-replicas`` (8);
* replicas (``--replicas``, default 1 4 16) at ``--fixed-requests`` (20k).

The defaults run in about a minute on 2 cores; the issue's sizes are flags:

    python benchmarks/bench_scale.py --requests 10000 100000 1000000 --replicas 1 16 128 256 \\
        --fixed-requests 200000 --plot benchmarks/results/bench_scale.png

``--plot`` needs matplotlib (the ``plot`` extra); results also go to ``--csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "bench_sim.yaml"
QPS_PER_REPLICA = 8.0

# runs one command and prints its own children's peak RSS (KB): a fresh process per point
_WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL);"
         " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def point(requests: int, replicas: int, out: Path) -> dict:
    """One whole ``vidur run``: wall seconds, requests/s, peak RSS MB."""
    cmd = [sys.executable, "-m", "vidur.cli", "run", str(SCENARIO), "--out", str(out), "--no-progress",
           "-s", "workload.num_requests", str(requests),
           "-s", "cluster.num_replicas", str(replicas),
           "-s", "workload.arrival.qps", str(QPS_PER_REPLICA * replicas),
           "-s", "global_scheduler", "round_robin"]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"bench_scale: run failed ({requests} requests, {replicas} replicas): "
                         f"{res.stderr.strip().splitlines()[-1:]}")
    rss_mb = int(res.stdout.split()[-1]) / 1024
    return {"requests": requests, "replicas": replicas, "wall_s": round(wall, 2),
            "req_per_s": round(requests / wall), "peak_rss_mb": round(rss_mb)}


def plot(rows: list[dict], args, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for col, (key, fixed, label) in enumerate(
        (("requests", args.fixed_replicas, "replicas"), ("replicas", args.fixed_requests, "requests"))
    ):
        sel = sorted((r for r in rows if r["curve"] == key), key=lambda r: r[key])
        x = [r[key] for r in sel]
        axes[0][col].plot(x, [r["wall_s"] for r in sel], "o-", label="wall s")
        axes[0][col].set_ylabel("wall s")
        axes[1][col].plot(x, [r["peak_rss_mb"] for r in sel], "o-", color="C1")
        axes[1][col].set_ylabel("peak RSS MB")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log")
            ax.set_xlabel(f"{key} ({fixed:,} {label})")
            ax.grid(True, alpha=0.3)
    fig.suptitle("vidur whole-process cost (bench_scale.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, nargs="+", default=[10_000, 20_000, 50_000])
    ap.add_argument("--fixed-replicas", type=int, default=8)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--fixed-requests", type=int, default=20_000)
    ap.add_argument("--csv", type=Path, default=None, help="write the points here")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the curves (matplotlib)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [("requests", n, args.fixed_replicas) for n in args.requests]
        plan += [("replicas", args.fixed_requests, r) for r in args.replicas]
        for i, (curve, n, r) in enumerate(plan):
            row = {"curve": curve, **point(n, r, Path(tmp) / f"p{i}")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if args.plot:
        plot(rows, args, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
