"""Run a capacity search: configurations -> max QPS each -> table, best, Pareto, evidence.

Output directory::

    results.jsonl      one line per finished configuration (the resume log, with every probe)
    results.csv        the table: every configuration, its max QPS, SLO metrics at it, cost
    results.parquet    the same table
    pareto.csv         Pareto frontier of QPS per dollar vs each latency metric
    pareto_<metric>.png one plot per latency metric (needs matplotlib)
    best.yaml          the best configuration as a scenario at its max QPS (``vidur run best.yaml``)
    report.txt         the short text report (also printed)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from vidur.errors import VidurError
from vidur.metrics.table import reported_quantiles
from vidur.search.cost import cost_fields, fleet_fields, pick_best
from vidur.search.executors import check_plugins_reach_workers, run_tasks
from vidur.search.probe import (
    metric_column,
    probe_scenario,
    probe_size,
    run_probe,
)
from vidur.search.spec import ConfigPoint, SearchSpec, config_key, latency_columns, op_column
from vidur.search.store import ResultStore
from vidur.search.worker import make_task

EVIDENCE_FACTOR = 1.1


@attrs.define
class SearchOutcome:
    """What :func:`run_search` returns: the table rows (grid order), the best
    row (or None), the evidence dict, and bookkeeping."""

    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    evidence: dict[str, Any] | None
    out_dir: Path
    ran: int  # configurations simulated in this call
    reused: int  # configurations taken from an earlier run
    pending: int  # configurations still not done (max_configs or errors)
    errors: list[dict[str, Any]]
    report: str = ""
    fleet_check: dict[str, Any] | None = None  # the cheapest fleet simulated at search.target_qps


def canonical_key(spec: SearchSpec, cfg: ConfigPoint, host=None, seed: int | None = None) -> str:
    """``config_key`` of ``cfg`` computed on its fully-structured scenario, so
    spelling a default explicitly (or not) gives the same key, plus what prices it
    (:func:`vidur.search.fingerprint.pricing_fingerprint`: the resolved estimator, the
    bytes of its profile or calibration, the code version), so a resumed search never
    reuses a result that a changed profile or simulator would not give again."""
    raw = spec.base_scenario(cfg, seed)
    if cfg.skip_reason:
        return config_key(spec, raw)
    from vidur.scenario import scenario_from_dict

    from vidur.search.fingerprint import pricing_fingerprint

    scenario = scenario_from_dict(probe_scenario(raw, 1.0, None, 1, None), host)
    sc = scenario.to_dict()
    sc["pricing"] = pricing_fingerprint(scenario, host)  # estimator, its data's bytes, the code version
    sc["workload"].pop("num_requests", None)
    sc["workload"].pop("duration", None)
    sc["workload"]["arrival"].pop("qps", None)
    sc.pop("simulation", None)
    sc.pop("metrics", None)
    return config_key(spec, _drop_none(sc))


def _drop_none(x):
    """Leave out None-valued keys, so a new optional scenario field does not change every key."""
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def _table_row(spec: SearchSpec, cfg: ConfigPoint, res: dict[str, Any] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "index": cfg.index,
        "config": cfg.label,
        "device": cfg.device,
        "tensor_parallel": cfg.tensor_parallel,
        "pipeline_parallel": cfg.pipeline_parallel,
        "expert_parallel": cfg.expert_parallel,
        "weight_dtype": cfg.weight_dtype,
        "kv_cache_dtype": cfg.kv_cache_dtype,
        "replicas": cfg.replicas,
        "gpus": cfg.gpus,
        "replica_scheduler": cfg.replica_scheduler["name"],
        "scheduler_config": json.dumps({k: v for k, v in cfg.replica_scheduler.items() if k != "name"}, sort_keys=True),
        "global_scheduler": cfg.global_scheduler["name"],
        "router_config": json.dumps({k: v for k, v in cfg.global_scheduler.items() if k != "name"}, sort_keys=True),
        "estimator": ((res or {}).get("provenance") or {}).get("estimator"),
        "estimator_source": ((res or {}).get("provenance") or {}).get("source"),
        "status": res["status"] if res else "pending",
        "reason": (res.get("reason") or "") if res else "",
        "max_qps": float(res.get("max_qps") or 0.0) if res else None,
        "next_failing_qps": res.get("hi_qps") if res else None,
    }
    at = (res or {}).get("at_max") or {}
    row["tokens_per_request"] = at.get("tokens_per_request")
    row.update(cost_fields(row["max_qps"] or 0.0, cfg.gpus, spec.prices[cfg.device], row["tokens_per_request"]))
    if spec.options.target_qps is not None:
        row["target_qps"] = spec.options.target_qps
        row.update(fleet_fields(spec.options.target_qps, row["max_qps"] or 0.0, cfg.replicas, cfg.gpus,
                                spec.prices[cfg.device]))
    slos = at.get("slos", {})
    for s in spec.slos:
        row[s.column] = slos.get(s.column, {}).get("value")
    row["slos_met"] = bool(slos) and all(v["met"] for v in slos.values())
    stats = at.get("stats", {})
    for metric, q in reported_quantiles():
        col = metric_column(metric, q)
        if col not in row:
            row[col] = stats.get(col)
    row["throughput_rps"] = at.get("throughput_rps")
    if at.get("prefix_cache"):  # only configurations with prefix caching have these columns
        row["prefix_hit_rate"] = at["prefix_cache"]["hit_rate"]
        row["prefix_evicted_blocks"] = at["prefix_cache"]["evicted_blocks"]
    # latencies at the operating point (a fraction of max QPS): the Pareto front's axis (issue #15 item 3e)
    op = (res or {}).get("at_operating_point") or {}
    row["op_qps"] = op.get("qps")
    row["op_slos_met"] = op.get("met")
    for col in latency_columns(spec):
        val = (op.get("slos", {}).get(col) or {}).get("value") if col in op.get("slos", {}) else op.get("stats", {}).get(col)
        row[op_column(col)] = val
    steady = (res or {}).get("steady") or {}
    row["steady"] = steady.get("ok")  # None: not checked (no answer); False: flagged (issue #15 item 3b)
    row["steady_doublings"] = steady.get("doublings")
    row["probe_requests"] = at.get("num_requests")
    row["unfinished_at_cap"] = at.get("unfinished")
    row["failed_slos_above"] = ",".join((res or {}).get("failed_at_hi") or [])
    # infeasible: which SLO failed at the lowest probe and the value it reached (None: nothing finished)
    row["infeasible_slos"] = "; ".join(
        f"{k}={'unfinished' if v is None else f'{v:.4g}'} (max {b:g})"
        for k, (v, b) in ((res or {}).get("infeasible_slos") or {}).items()
    ) or None
    row["probes"] = len((res or {}).get("probes") or [])
    row["key"] = (res or {}).get("key")
    return row


def seed_fields(results: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Max QPS over seeds (``seeds:``): mean and 95 % Student-t interval of the seeds' searches that
    bracketed an answer (status ok); None while a seed is still pending."""
    from vidur.metrics.intervals import mean_interval

    if any(r is None for r in results):
        return {"max_qps_mean": None, "max_qps_ci_low": None, "max_qps_ci_high": None, "max_qps_seeds": None,
                "seeds_ok": None}
    vals = [float(r.get("max_qps") or 0.0) if r["status"] == "ok" else None for r in results]
    iv = mean_interval(vals)
    return {
        "max_qps_mean": iv.mean, "max_qps_ci_low": iv.low, "max_qps_ci_high": iv.high,
        "max_qps_seeds": json.dumps(vals), "seeds_ok": iv.n,
    }


def fleet_check(spec: SearchSpec, row: dict[str, Any], host=None) -> dict[str, Any]:
    """Simulate the cheapest fleet (``row``'s configuration with ``fleet_replicas`` replicas) at
    ``search.target_qps`` with a full-size probe: the linear extrapolation checked directly."""
    cfg = attrs.evolve(spec.configs[row["index"]], replicas=row["fleet_replicas"])
    q = spec.options.target_qps
    d, n = probe_size(spec.probe_duration, spec.probe_requests, 1.0, q, spec.options.min_requests)
    try:
        ev = run_probe(spec.base_scenario(cfg), q, duration=d, num_requests=n, drain=spec.drain_s, slos=spec.slos,
                       host=host)
    except VidurError as exc:
        return {"config": cfg.label, "qps": q, "met": False, "error": str(exc), "slos": {}}
    return {"config": cfg.label, "qps": q, "met": ev["met"], "slos": ev["slos"], "requests": ev["num_requests"]}


def evidence_for(spec: SearchSpec, cfg: ConfigPoint, max_qps: float, host=None, factor: float = EVIDENCE_FACTOR) -> dict[str, Any]:
    """Re-simulate ``cfg`` with full-size probes at ``max_qps`` and ``factor`` × it.

    ``confirmed`` is True when every SLO holds at ``max_qps`` and at least one
    fails at ``factor × max_qps``.
    """
    base = spec.base_scenario(cfg)
    out: dict[str, Any] = {"config": cfg.label, "factor": factor}
    for name, q in (("at_max", max_qps), ("above", max_qps * factor)):
        d, n = probe_size(spec.probe_duration, spec.probe_requests, 1.0, q, spec.options.min_requests)
        ev = run_probe(base, q, duration=d, num_requests=n, drain=spec.drain_s, slos=spec.slos, host=host)
        out[name] = {"qps": q, "met": ev["met"], "slos": ev["slos"], "requests": ev["num_requests"],
                     "unfinished": ev["unfinished"]}
    out["confirmed"] = bool(out["at_max"]["met"] and not out["above"]["met"])
    return out


def run_search(
    spec: SearchSpec,
    out_dir: str | Path,
    *,
    executor: str = "process",
    jobs: int | None = None,
    address: str | None = None,
    progress: bool = True,
    fresh: bool = False,
    max_configs: int | None = None,
    evidence: bool = True,
    host=None,
    log: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """Search every configuration of ``spec`` (resuming from ``out_dir``) and write the outputs.

    ``out_dir`` is locked while the search runs: a second search there is refused.
    """
    from vidur.outdir import check_output_dir

    out = check_output_dir(out_dir)
    if not spec.configs:
        raise VidurError("the grid has no configurations")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidurError(f"cannot create the output directory {out}: {exc.strerror or exc}") from None
    lock = _lock(out)  # held until this process exits or the search returns
    try:
        return _run_search(spec, out, executor=executor, jobs=jobs, address=address, progress=progress, fresh=fresh,
                           max_configs=max_configs, evidence=evidence, host=host, log=log)
    finally:
        lock.close()


LOCK_FILE = ".search.lock"


def _lock(out: Path):
    """An exclusive lock on ``out``: a second search writing there is refused in one line."""
    import os

    fh = open(out / LOCK_FILE, "a+", encoding="utf-8")
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        who = fh.read().strip()
        fh.close()
        raise VidurError(
            f"another vidur search{f' ({who})' if who else ''} is writing to {out}; wait for it to finish "
            f"or choose another --out"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def _run_search(spec, out, *, executor, jobs, address, progress, fresh, max_configs, evidence, host, log) -> SearchOutcome:
    from vidur.search.outputs import write_outputs

    log = log or (lambda msg: print(msg, file=sys.stderr))
    store = ResultStore(out / "results.jsonl")
    if fresh:
        store.clear()
    done = store.load()
    # one search per (configuration, seed); the first seed's is the configuration's row
    seed_keys = {seed: [canonical_key(spec, cfg, host, seed) for cfg in spec.configs] for seed in spec.seeds}
    keys = seed_keys[spec.seed]
    by_key: dict[str, tuple[ConfigPoint, int]] = {}
    for seed, ks in seed_keys.items():
        for k, cfg in zip(ks, spec.configs):
            if seed == spec.seed or not cfg.skip_reason:  # a skipped configuration is skipped once
                by_key.setdefault(k, (cfg, seed))
    pending_keys = [k for k in by_key if k not in done]
    reused = len(by_key) - len(pending_keys)
    todo = pending_keys if max_configs is None else pending_keys[: max(0, max_configs)]
    tasks = [make_task(spec, by_key[k][0], k, by_key[k][1]) for k in todo]
    # most replicas first: they carry the most requests per probe (better packing at the end)
    tasks.sort(key=lambda t: -t["scenario"]["cluster"]["num_replicas"])
    check_plugins_reach_workers([t["scenario"] for t in tasks if not t.get("skip_reason")], executor, jobs, host)
    errors: list[dict] = []
    ray_started = False
    if executor == "ray" and tasks:
        from vidur.search.executors import start_ray

        ray_started = start_ray(address, jobs)  # before the progress bar: a failure is one line
    bar = None
    if progress and tasks:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="config", desc="search", dynamic_ncols=True, file=sys.stderr)
    say = bar.write if bar is not None else log

    def on_result(row: dict[str, Any]) -> None:
        if row["status"] == "error":
            errors.append(row)
            say(f"error   {row['label']}: {row['reason']}")
        else:
            store.append(row)
            done[row["key"]] = row
            if row["status"] == "skipped":
                say(f"skipped {row['label']}: {row['reason']}")
        if bar is not None:
            bar.set_postfix_str(f"last: {row['label']} {row.get('max_qps') or 0:.3g} QPS", refresh=False)
            bar.update(1)

    try:
        run_tasks(tasks, on_result, executor=executor, jobs=jobs, address=address, host=host)
    finally:
        if bar is not None:
            bar.close()
        if ray_started:
            import ray

            ray.shutdown()

    rows = [_table_row(spec, cfg, done.get(k)) for k, cfg in zip(keys, spec.configs)]
    if len(spec.seeds) > 1:
        for i, row in enumerate(rows):
            row.update(seed_fields([done.get(seed_keys[s][i]) for s in spec.seeds]))
    best = pick_best(rows)
    ev = None
    if best is not None and evidence:
        cfg = spec.configs[best["index"]]
        ev = evidence_for(spec, cfg, best["max_qps"], host=host)
    outcome = SearchOutcome(
        rows=rows, best=best, evidence=ev, out_dir=out, ran=len(tasks) - len(errors), reused=reused,
        pending=len(pending_keys) - (len(tasks) - len(errors)), errors=errors,
    )
    if spec.options.target_qps is not None and evidence:
        from vidur.search.cost import cheapest_fleets

        fleets = cheapest_fleets(rows)
        if fleets:
            outcome.fleet_check = fleet_check(spec, fleets[0], host=host)
    outcome.report = write_outputs(spec, outcome, log=log)
    return outcome
