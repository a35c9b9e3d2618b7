"""Run a policy sweep: build each request stream once, simulate every policy on it, aggregate.

Output directory::

    cells.jsonl          one line per finished simulation (the resume log)
    cells.csv            one row per simulation: policy, workload, load, seed, headline metrics
    summary.csv          per (workload, load, policy, metric): mean and 95 % CI over seeds
    paired.csv           per (workload, load, policy, metric): paired difference to the baseline, p-value
    *.parquet            the same three tables
    latency_vs_load.png  TTFT/TPOT/E2E p50 and p99 against load, per policy (needs matplotlib)
    goodput_vs_load.png  goodput and throughput against load
    cdf_<load>.png       overlaid TTFT/TPOT/E2E CDFs per policy at each load
    report.txt           the side-by-side tables (also printed)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from vidur.errors import VidurError
from vidur.search.executors import check_plugins_reach_workers, run_tasks
from vidur.search.store import ResultStore
from vidur.sweep.aggregate import paired_rows, summary_rows
from vidur.sweep.spec import SweepSpec, cell_key
from vidur.sweep.worker import build_stream, guarded_cell, table_digest


@attrs.define
class SweepOutcome:
    """What :func:`run_sweep` returns."""

    cells: list[dict[str, Any]]  # one per cell of the spec, spec order (None-free: pending cells left out)
    summary: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    out_dir: Path
    ran: int
    reused: int
    errors: list[dict[str, Any]]
    report: str = ""


def plan(spec: SweepSpec, host=None) -> list[tuple[Any, dict, str]]:
    """``[(cell, raw scenario, key)]`` for every cell; validates each scenario (one-line
    errors, before anything runs or is written)."""
    from vidur.scenario import scenario_from_dict

    out = []
    for cell in spec.cells():
        raw = spec.scenario_of(cell, host)
        resolved = scenario_from_dict(raw, host).to_dict()
        out.append((cell, raw, cell_key(resolved)))
    return out


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    executor: str = "process",
    jobs: int | None = None,
    address: str | None = None,
    progress: bool = True,
    fresh: bool = False,
    plots: bool = True,
    host=None,
    log: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Simulate every cell of ``spec`` not already in ``out_dir``, then write the outputs."""
    from vidur.sweep.outputs import write_outputs

    log = log or (lambda msg: print(msg, file=sys.stderr))
    planned = plan(spec, host)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidurError(f"cannot create the output directory {out}: {exc.strerror or exc}") from None
    store = ResultStore(out / "cells.jsonl")
    if fresh:
        store.clear()
    done = store.load()
    pending: dict[str, tuple[int, Any, dict]] = {}
    for i, (cell, raw, key) in enumerate(planned):
        if key not in done and key not in pending:
            pending[key] = (i, cell, raw)
    reused = len({k for _, _, k in planned}) - len(pending)
    # a worker without the plugin would store its cells as skipped: refuse before any runs
    check_plugins_reach_workers([raw for _, _, raw in pending.values()], executor, jobs, host)
    streams: dict[tuple, tuple[Any, int, str]] = {}
    tasks = []
    for key, (i, cell, raw) in pending.items():
        if cell.stream not in streams:  # built once, handed to every policy of the stream
            table, clipped = build_stream(raw, host)
            streams[cell.stream] = (table, clipped, table_digest(table))
        table, clipped, digest = streams[cell.stream]
        tasks.append({"key": key, "index": i, "policy": cell.policy.label, "workload": cell.workload.label,
                      "qps": cell.qps, "seed": cell.seed, "scenario": raw, "table": table, "clipped": clipped,
                      "digest": digest})
    tasks.sort(key=lambda t: -(t["qps"] or 0.0))  # the heaviest first: better packing at the end
    errors: list[dict] = []
    bar = None
    if progress and tasks:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="run", desc="sweep", dynamic_ncols=True, file=sys.stderr)
    say = bar.write if bar is not None else log

    def on_result(row: dict[str, Any]) -> None:
        if row["status"] == "error":
            errors.append(row)
            say(f"error   {row['policy']} seed {row['seed']}: {row['reason']}")
        else:
            store.append(row)
            done[row["key"]] = row
        if bar is not None:
            bar.set_postfix_str(f"last: {row['policy']} seed {row['seed']}", refresh=False)
            bar.update(1)

    try:
        run_tasks(tasks, on_result, executor=executor, jobs=jobs, address=address, host=host, work=guarded_cell)
    finally:
        if bar is not None:
            bar.close()
    cells = []
    for i, (cell, _raw, key) in enumerate(planned):
        r = done.get(key)
        if r is None:
            continue
        # a cell reused from another spec's run (same key) is labelled as this spec names it
        r = dict(r, index=i, policy=cell.policy.label, workload=cell.workload.label, qps=cell.qps, seed=cell.seed)
        cells.append(r)
    policies = [p.label for p in spec.policies]
    summary = summary_rows(cells, policies)
    paired = paired_rows(cells, policies, spec.baseline)
    outcome = SweepOutcome(cells=cells, summary=summary, paired=paired, out_dir=out,
                           ran=len(tasks) - len(errors), reused=reused, errors=errors)
    outcome.report = write_outputs(spec, out, cells, summary, paired, plots=plots, log=log)
    return outcome
