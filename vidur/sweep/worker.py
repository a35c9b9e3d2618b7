"""The unit of parallel work of a sweep: one policy on one request stream.

A task is a dict that crosses process and Ray boundaries: the cell's raw
scenario and the request table the parent built once for its (workload,
load, seed), so every policy of a stream replays the very same requests.
The result is a JSON-able row appended to ``cells.jsonl``: the headline
metrics, quantiles of TTFT/TPOT/E2E (for CDF plots) and the stream's digest.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from vidur.errors import VidurError

#: quantiles (in %) stored per cell for the CDF plots (of :func:`vidur.metrics.headline.cdf_metrics`)
CDF_PERCENTS = tuple(range(0, 101))


def table_digest(table) -> str:
    """Hash of a request table's arrivals and lengths (equal digests: the same stream)."""
    h = hashlib.sha256()
    for a in (table.arrival, table.prompt, table.output):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def build_stream(raw: dict, host=None):
    """The request table of a raw scenario exactly as :class:`~vidur.engine.simulation.Simulation`
    would draw it (same seed, same child streams), and how many lengths were clipped."""
    from vidur.plugins import get_host
    from vidur.scenario import scenario_from_dict
    from vidur.workload.workload import build_requests

    host = host or get_host()
    sc = scenario_from_dict(raw, host)
    wl = sc.workload
    arrival = host.get("workload.arrival", wl.arrival.name)(wl.arrival.config)
    lengths = host.get("workload.length", wl.lengths.name)(wl.lengths.config)
    table = build_requests(arrival, lengths, np.random.default_rng(sc.seed), wl.num_requests, wl.duration)
    if len(table) == 0:
        raise VidurError("the workload produced no requests; raise workload.duration or set num_requests")
    return table, int(getattr(lengths, "clipped", 0) or 0)


def run_cell(task: dict[str, Any], host=None) -> dict[str, Any]:
    """Simulate one cell on its given request table.

    A cell that cannot run (a :class:`VidurError`: a request that does not fit
    this policy's KV reservation, a bad option) comes back ``status: skipped``
    with the reason; it is stored, so a rerun does not retry it.
    """
    from vidur.engine.run_scenario import summarize_run
    from vidur.engine.simulation import Simulation
    from vidur.metrics.headline import cdf_metrics, headline_values
    from vidur.metrics.summary import request_metrics
    from vidur.plugins import get_host
    from vidur.scenario import scenario_from_dict

    t0 = time.perf_counter()
    row: dict[str, Any] = {k: task[k] for k in ("key", "index", "policy", "workload", "qps", "seed")}
    row["stream"] = task["digest"]
    host = host or get_host()
    try:
        sc = scenario_from_dict(task["scenario"], host)
        sim = Simulation(sc, host, requests=task["table"])
        result = sim.run(progress=False)
    except VidurError as exc:
        row.update(status="skipped", reason=str(exc), metrics={}, cdf={}, wall_s=round(time.perf_counter() - t0, 3))
        return row
    summary = summarize_run(sim, result)
    m = request_metrics(result.records)
    cdf = {}
    for name in cdf_metrics():
        if name not in m:
            continue
        x = m[name][np.isfinite(m[name])]
        cdf[name] = np.percentile(x, CDF_PERCENTS).tolist() if x.size else []
    row.update(
        status="ok",
        reason="",
        metrics=headline_values(summary),
        unfinished=summary["requests"]["unfinished"],
        requests=summary["requests"]["total"],
        clipped=task["clipped"],
        estimator=result.estimator,
        cdf=cdf,
        wall_s=round(time.perf_counter() - t0, 3),
    )
    return row


def guarded_cell(task: dict[str, Any], host=None) -> dict[str, Any]:
    """:func:`run_cell`, with an unexpected exception turned into a ``status: error``
    row (not stored, so a rerun retries it) instead of stopping the sweep."""
    import traceback

    try:
        return run_cell(task, host)
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
        return {"key": task["key"], "index": task["index"], "policy": task["policy"], "workload": task["workload"],
                "qps": task["qps"], "seed": task["seed"], "status": "error",
                "reason": f"{type(exc).__name__}: {exc}{where}", "metrics": {}, "cdf": {}}
