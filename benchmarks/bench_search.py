"""Capacity-search speed benchmark (issue 4).

Runs ``vidur search scenarios/search-llama3-8b.yaml`` (Llama-3-8B, Splitwise
conversation lengths, A100/H100/H200 x TP 1/2/4 x Sarathi chunk
512/1024/2048 and vLLM on an 8-GPU budget: 36 configurations) from scratch in
a subprocess pinned to ``--cores`` cores (default 2) with as many worker
processes, and reports the wall time, configurations per minute, probes and
simulated requests. Target: the whole search in under 5 minutes on 2 cores.

    python benchmarks/bench_search.py [--cores 2] [--spec PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent / "scenarios" / "search-llama3-8b.yaml"
TARGET_S = 300.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2, help="cores to pin the search to (and worker processes)")
    ap.add_argument("--spec", default=str(SPEC))
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

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "search"
        cmd = [sys.executable, "-m", "vidur.cli", "search", args.spec, "--out", str(out), "--fresh",
               "--jobs", str(len(cores) if cores else args.cores), "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, preexec_fn=pin, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            sys.stderr.write(proc.stderr)
            return proc.returncode
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
        n = len(rows)
        probes = sum(len(r.get("probes", [])) for r in rows)
        requests = sum(p["requests"] for r in rows for p in r.get("probes", []))
        worker = sum(r.get("wall_s", 0.0) for r in rows)
        report = (out / "report.txt").read_text().splitlines()
        best = next((line for line in report if line.startswith("best:")), "best: ?")
        confirmed = next((line.strip() for line in report if "confirmed" in line), "")
        print(f"spec: {args.spec}")
        print(f"cores: {len(cores) if cores else '?'} ({args.cores} requested), worker processes: {len(cores) if cores else args.cores}")
        print(f"wall time: {wall:.1f} s for {n} configurations = {n / wall * 60:.1f} configurations/minute "
              f"(target < {TARGET_S:.0f} s: {'met' if wall < TARGET_S else 'NOT met'})")
        print(f"work: {probes} probes, {requests:,} simulated requests, {worker:.0f} worker-seconds "
              f"({requests / max(worker, 1e-9):,.0f} requests per worker-second)")
        print(best)
        if confirmed:
            print(f"evidence: {confirmed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
