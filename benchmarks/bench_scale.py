"""Scale benchmark (issue 14): cost against requests and against replicas.

The bench_sim scenario (Llama-2-7B on H100s, Sarathi, splitwise conversation
lengths) behind a round-robin router, Poisson at 8 QPS per replica so every
replica sees the same load. Each point is one whole ``vidur run`` process in a
fresh wrapper (so its peak RSS is its own): wall seconds, requests per wall
second, peak memory of the whole process tree (the run and any worker processes
it forks, ``simulation.workers``): /proc is sampled every 50 ms and the RSS of every
process in the tree summed (pages shared after fork counted in each process, an upper
bound) along with their PSS (shared pages split between their sharers: what the tree
really holds); and the tree's CPU seconds (user + system; on a shared machine the
wall time depends on the other tenants, the CPU time much less). Two curves:

* requests (``--requests``, default 10k 20k 50k) on ``--fixed-replicas`` (8);
* replicas (``--replicas``, default 1 4 16) at ``--fixed-requests`` (20k).

The defaults run in about a minute on 2 cores; the issue's sizes are flags:

    python benchmarks/bench_scale.py --requests 10000 100000 1000000 --replicas 1 16 128 256 \\
        --fixed-requests 200000 --plot benchmarks/results/bench_scale.png

Single points instead of the curves: ``--point REQUESTS REPLICAS`` (repeatable);
``--workers auto|N`` sets ``simulation.workers`` for every point (default: the
scenario's, ``auto``):

    python benchmarks/bench_scale.py --point 1000000 128 --workers 1

``--plot`` needs matplotlib (the ``plot`` extra); results also go to ``--csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "bench_sim.yaml"
QPS_PER_REPLICA = 8.0

SAMPLE_S = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes of one process; zeros once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss = pss = int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return rss, pss


def run_measured(cmd: list[str]) -> tuple[float, int, int, float]:
    """Run ``cmd``; (wall s, peak summed RSS, peak summed PSS, CPU s) of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss = pss = 0
        for p in _tree(proc.pid):
            r, q = _memory(p)
            rss += r
            pss += q
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tree's CPU time (workers are waited for)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: run failed: {err.strip().splitlines()[-1:]}")
    return wall, peak_rss, peak_pss, cpu


def point(requests: int, replicas: int, out: Path, workers: str | None = None) -> dict:
    """One whole ``vidur run``: wall seconds, requests/s, peak RSS and PSS (MB) of its process tree."""
    cmd = [sys.executable, "-m", "vidur.cli", "run", str(SCENARIO), "--out", str(out), "--no-progress",
           "-s", "workload.num_requests", str(requests),
           "-s", "cluster.num_replicas", str(replicas),
           "-s", "workload.arrival.qps", str(QPS_PER_REPLICA * replicas),
           "-s", "global_scheduler", "round_robin"]
    if workers is not None:
        cmd += ["-s", "simulation.workers", str(workers)]
    wall, rss, pss, cpu = run_measured(cmd)
    return {"requests": requests, "replicas": replicas, "workers": workers or "auto", "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "req_per_s": round(requests / wall), "peak_rss_mb": round(rss / 2**20),
            "peak_pss_mb": round(pss / 2**20)}


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
    ap.add_argument("--point", type=int, nargs=2, action="append", metavar=("REQUESTS", "REPLICAS"),
                    help="run only these points (repeatable), not the curves")
    ap.add_argument("--workers", default=None, help="simulation.workers for every point: auto or N")
    ap.add_argument("--csv", type=Path, default=None, help="write the points here")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of the curves (matplotlib)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.point:
            plan = [("point", n, r) for n, r in args.point]
        else:
            plan = [("requests", n, args.fixed_replicas) for n in args.requests]
            plan += [("replicas", args.fixed_requests, r) for r in args.replicas]
        for i, (curve, n, r) in enumerate(plan):
            row = {"curve": curve, **point(n, r, Path(tmp) / f"p{i}", args.workers)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if args.plot and not args.point:
        plot(rows, args, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
