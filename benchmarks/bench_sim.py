"""Simulator speed benchmark (issue 2).

50,000 requests, Llama-2-7B on one H100 at TP1, Sarathi (chunk 512, batch cap
128), Poisson at 8 QPS, lengths from ../shared/data/traces/splitwise_conv.csv
clipped to 4,096 total tokens (benchmarks/bench_sim.yaml).

Compiles the package's bytecode first (as an installed package has it), then measures the
whole ``vidur run`` process (start-up, workload, simulation,
summary, run directory with tables) in a subprocess: wall time, requests per
wall second, CPU seconds (user + system) and peak RSS; ``--repeat R`` runs it R
times and reports each run and the best (on a shared machine the fastest run
is the one least slowed by other tenants). Then checks on a smaller run that
the fast-forward mode writes exactly the files that stepping every iteration
writes.

    python benchmarks/bench_sim.py [--requests N] [--repeat R] [--check-requests M] [--scheduler NAME] [-s KEY VALUE ...]
                                   [--tree CHECKOUT]

``--tree`` times another checkout's vidur (``git worktree add /tmp/old <commit>``) with this
script and scenario, for before/after figures measured back to back on one machine.

``--scheduler`` switches the replica scheduler (options it does not take are dropped, as
``vidur run --scheduler`` does), ``-s`` overrides scenario keys (e.g. ``-s memory_planner sglang``).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "bench_sim.yaml"


#: ``--tree``: the vidur checkout to time (None: the one this Python imports)
TREE: Path | None = None


def _child() -> dict:
    """Where the subprocesses run and with which environment: with ``--tree``, in that checkout
    with it first on the path (``python -m`` also puts the working directory first, so timing
    another checkout from this one would silently time this one)."""
    if TREE is None:
        return {}
    env = dict(os.environ, PYTHONPATH=str(TREE))
    return {"cwd": TREE, "env": env}


def run(out: Path, requests: int, *extra: str) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one ``vidur run`` subprocess."""
    cmd = [sys.executable, "-m", "vidur.cli", "run", str(SCENARIO), "--out", str(out), "--no-progress",
           "-s", "workload.num_requests", str(requests), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **_child())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss of children is the largest child so far: this run's peak unless an earlier one was larger
    return wall, cpu, max(after.ru_maxrss, before.ru_maxrss) / 1024


def compile_bytecode() -> str:
    """Compile the vidur package's bytecode once, as ``pip install`` does, so that no timed run
    compiles modules from source (a checkout run with PYTHONDONTWRITEBYTECODE=1, as some
    machines set it, would otherwise pay ~0.1-0.25 s of compiling in every run)."""
    out = subprocess.run(
        [sys.executable, "-c", "import compileall, pathlib, vidur; p = pathlib.Path(vidur.__file__).parent; "
         "print(compileall.compile_dir(p, quiet=1), p)"],
        capture_output=True, text=True, **_child(),
    )
    ok, _, where = out.stdout.strip().partition(" ")
    return f"timing {where}: " + ("bytecode compiled" if ok == "True" else "bytecode NOT compiled (read-only package?)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=1, help="timed runs (each reported, and the fastest)")
    ap.add_argument("--check-requests", type=int, default=5_000)
    ap.add_argument("--scheduler", default=None, help="replica scheduler instead of the scenario's sarathi")
    ap.add_argument("-s", "--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("--tree", type=Path, default=None,
                    help="time the vidur of this checkout (e.g. an older commit's worktree) instead of this Python's")
    args = ap.parse_args()
    global TREE
    if args.tree is not None:
        if not (args.tree / "vidur" / "cli.py").is_file():
            ap.error(f"--tree {args.tree}: no vidur checkout there (vidur/cli.py missing)")
        TREE = args.tree.resolve()
    print(compile_bytecode())
    extra = (["--scheduler", args.scheduler] if args.scheduler else []) + [x for kv in args.set for x in ("-s", *kv)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.repeat < 1:
            ap.error("--repeat must be >= 1")
        runs = []
        for i in range(args.repeat):
            wall, cpu, rss = run(tmp / f"full{i}", args.requests, *extra)
            runs.append((wall, cpu))
            print(f"whole process: {args.requests:,} requests in {wall:.2f} s = {args.requests / wall:,.0f} requests/s; "
                  f"{cpu:.2f} CPU s; peak RSS {rss:,.0f} MB")
        if args.repeat > 1:
            wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
            print(f"best of {args.repeat}: {wall:.2f} s = {args.requests / wall:,.0f} requests/s; {cpu:.2f} CPU s")
        wall_f, _, _ = run(tmp / "fast", args.check_requests, *extra)
        wall_s, _, _ = run(tmp / "step", args.check_requests, "--step", *extra)
        names = sorted(p.name for p in (tmp / "fast").iterdir())  # batches.parquet, or the summarised log's files
        same = names == sorted(p.name for p in (tmp / "step").iterdir()) and all(
            filecmp.cmp(tmp / "fast" / f, tmp / "step" / f, shallow=False) for f in names)
        print(f"check ({args.check_requests:,} requests): fast-forward {wall_f:.2f} s, step-by-step {wall_s:.2f} s, "
              f"identical files: {same}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
