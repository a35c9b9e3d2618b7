"""Prefix caching benchmark (issue 11).

For the shipped multi-turn and shared-prefix scenarios (scenarios/multi-turn.yaml,
scenarios/shared-prefix.yaml), runs each with prefix caching on and off and
prints the token-level hit rate, evictions and TTFT/TPOT/E2E (p50, p99).
Then measures the simulator's speed with caching on: the bench_sim workload
(50,000 requests, unique prompts) and a 50,000-request shared-prefix run,
each against the same run with caching off (whole ``vidur run`` processes).

    python benchmarks/bench_prefix.py [--requests N] [--speed-requests M]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def latency_row(name: str, caching: bool, requests: int) -> str:
    from vidur.engine.run_scenario import run_scenario
    from vidur.scenario import load_scenario

    sc = load_scenario(REPO / "scenarios" / name, settings=[
        ("workload.num_requests", str(requests)),
        ("replica_scheduler.prefix_caching", "true" if caching else "false"),
        ("simulation.progress", "false"),
    ])
    _, s = run_scenario(sc, None)
    lat = s["latency"]
    pc = s.get("prefix_cache", {}).get("cluster", {})
    hit = f"{pc['hit_rate']:.1%}" if pc.get("hit_rate") is not None else "-"
    ev = f"{pc.get('evicted_blocks', 0):,}" if pc else "-"

    def ms(metric: str, q: str) -> str:
        v = lat[metric].get(q)
        return f"{v * 1e3:,.0f}" if v is not None else "-"

    return (f"| {name} | {'on' if caching else 'off'} | {hit} | {ev} | {ms('ttft', 'p50')} / {ms('ttft', 'p99')} | "
            f"{ms('tpot', 'p50')} / {ms('tpot', 'p99')} | {ms('e2e', 'p50')} / {ms('e2e', 'p99')} | "
            f"{s['wall_seconds']:.2f} |")


def whole_run(scenario: Path, requests: int, *args: str) -> float:
    """Wall seconds of one ``vidur run`` subprocess (``args``: more command-line arguments)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "vidur.cli", "run", str(scenario), "--out", str(Path(tmp) / "r"), "--no-progress",
               "-s", "workload.num_requests", str(requests), *args]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--speed-requests", type=int, default=50_000)
    args = ap.parse_args()
    print("| scenario | caching | hit rate | evicted blocks | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | "
          "E2E p50 / p99 (ms) | wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("multi-turn.yaml", "shared-prefix.yaml"):
        for caching in (False, True):
            print(latency_row(name, caching, args.requests), flush=True)
    print()
    n = args.speed_requests
    bench = HERE / "bench_sim.yaml"
    shared = REPO / "scenarios" / "shared-prefix.yaml"
    for label, scenario, extra in (
        ("bench_sim workload (unique prompts)", bench, ()),
        ("shared-prefix, 1 replica, 20 QPS", shared, ("-s", "cluster.num_replicas", "1", "--global-scheduler",
                                                     "round_robin", "-s", "workload.arrival.qps", "20")),
    ):
        off = whole_run(scenario, n, *extra, "-s", "replica_scheduler.prefix_caching", "false")
        on = whole_run(scenario, n, *extra, "-s", "replica_scheduler.prefix_caching", "true")
        print(f"{label}: {n:,} requests, caching off {off:.2f} s ({n / off:,.0f} req/s), "
              f"on {on:.2f} s ({n / on:,.0f} req/s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
