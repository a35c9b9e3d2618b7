"""Policy-sweep speed benchmark (issue 15).

Runs ``vidur sweep scenarios/multi-replica.yaml`` (Llama-3-8B on 4 x A100,
gamma arrivals, Splitwise conversation lengths, 5000 requests per run) for
the five built-in replica schedulers x 5 seeds x 4 load levels (0.5, 0.75,
1 and 1.25 x the scenario's 12 QPS): 100 simulations, from scratch, in a
subprocess pinned to ``--cores`` cores (default 2) with as many worker
processes. Reports the wall time, simulations per minute, simulated requests
and the machine's load average (the machine may be shared). Target: under
5 minutes on 2 cores.

    python benchmarks/bench_sweep.py [--cores 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "scenarios" / "multi-replica.yaml"
POLICIES = "vllm,sarathi,orca,faster_transformer,lightllm"
TARGET_S = 300.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2, help="cores to pin the sweep to (and worker processes)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--load", default="0.5,0.75,1,1.25")
    ap.add_argument("--out", help="output directory (default: a temporary one, removed afterwards)")
    args = ap.parse_args()

    cores = None
    if hasattr(os, "sched_getaffinity"):
        avail = sorted(os.sched_getaffinity(0))
        cores = avail[: args.cores]
        if len(cores) < args.cores:
            print(f"note: only {len(cores)} cores available", file=sys.stderr)

    def pin():
        if cores is not None:
            os.sched_setaffinity(0, cores)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "sweep"
        cmd = [sys.executable, "-m", "vidur.cli", "sweep", str(SCENARIO), "--policy", POLICIES,
               "--baseline", "sarathi", "--seeds", str(args.seeds), "--load", args.load, "--out", str(out),
               "--fresh", "--jobs", str(len(cores) if cores else args.cores), "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, preexec_fn=pin, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        rows = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines() if line.strip()]
        ok = [r for r in rows if r["status"] == "ok"]
        reqs = sum(r.get("requests", 0) for r in ok)
        print(proc.stdout)
    print(f"simulations: {len(rows)} ({len(ok)} ran, {len(rows) - len(ok)} skipped)")
    print(f"simulated requests: {reqs:,}")
    print(f"wall: {wall:.1f} s on {len(cores) if cores else args.cores} cores "
          f"({60 * len(rows) / wall:.1f} simulations/minute); target < {TARGET_S:.0f} s: "
          f"{'met' if wall < TARGET_S else 'MISSED'}")
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu.ru_utime + cpu.ru_stime
    n_cores = len(cores) if cores else args.cores
    print(f"CPU time of the sweep and its workers: {cpu_s:.1f} s (/ {n_cores} cores = {cpu_s / n_cores:.1f} s: "
          "the wall time on an otherwise idle machine, roughly)")
    print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
