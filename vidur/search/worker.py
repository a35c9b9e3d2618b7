"""The unit of parallel work: one configuration's whole max-QPS search.

A task is a JSON-able dict (it crosses process and Ray boundaries); the
result is a JSON-able dict too, appended as one line to ``results.jsonl``.
Results depend only on the task, never on which executor or worker ran it.
"""

from __future__ import annotations

import time
from typing import Any

from vidur.errors import VidurError
from vidur.search.maxqps import find_max_qps, stage_tolerances
from vidur.search.probe import estimate_capacity, probe_size, run_probe
from vidur.search.spec import ConfigPoint, SearchSpec, SLOTarget

#: first probe = this × the saturation-throughput estimate (which tends to
#: fall 10-20 % below the SLO-limited max QPS with Poisson arrivals)
CAPACITY_HEADROOM = 1.1


def make_task(spec: SearchSpec, cfg: ConfigPoint, key: str, seed: int | None = None) -> dict[str, Any]:
    """The task of ``cfg`` (with ``seed`` in place of the spec's): everything a worker needs, nothing it must look up."""
    o = spec.options
    fractions, tolerances = stage_tolerances(o.tolerance, o.coarse_fraction, o.coarse_tolerance)
    return {
        "key": key,
        "index": cfg.index,
        "label": cfg.label,
        "skip_reason": cfg.skip_reason,
        "scenario": spec.base_scenario(cfg, seed),
        "duration": spec.probe_duration,
        "requests": spec.probe_requests,
        "drain": spec.drain_s,
        "slos": [[s.metric, s.quantile, s.max_s] for s in spec.slos],
        "fractions": fractions,
        "tolerances": tolerances,
        "initial_qps": o.initial_qps,
        "fallback_qps": o.initial_qps_per_replica * max(cfg.replicas, 1),
        "expansion": o.expansion,
        "min_qps": o.min_qps,
        "max_qps": o.max_qps,
        "max_probes": o.max_probes,
        "min_requests": o.min_requests,
        "operating_point": o.operating_point,
    }


def search_config(task: dict[str, Any], host=None) -> dict[str, Any]:
    """Find the maximum QPS of one configuration; see :mod:`vidur.search.maxqps`.

    Invalid or non-fitting configurations (a :class:`VidurError` while
    building the simulation) come back with ``status: skipped`` and the
    reason. Other exceptions propagate.
    """
    t0 = time.perf_counter()
    row: dict[str, Any] = {"key": task["key"], "index": task["index"], "label": task["label"]}
    if task.get("skip_reason"):
        row.update(status="skipped", reason=task["skip_reason"], max_qps=0.0, hi_qps=None, probes=[], wall_s=0.0)
        return row
    slos = tuple(SLOTarget(m, q, b) for m, q, b in task["slos"])
    probes: list[dict] = []
    full: dict[float, dict] = {}
    last_stage = len(task["fractions"]) - 1

    def probe(qps: float, stage: int) -> bool:
        duration, n = probe_size(task["duration"], task["requests"], task["fractions"][stage], qps, task["min_requests"])
        try:
            ev = run_probe(task["scenario"], qps, duration=duration, num_requests=n, drain=task["drain"], slos=slos, host=host)
        except VidurError as exc:
            raise _Skip(str(exc) if not probes else f"at {qps:.4g} QPS: {exc}") from None
        probes.append({
            "qps": qps, "stage": stage, "met": ev["met"], "requests": ev["num_requests"],
            "unfinished": ev["unfinished"], "wall_s": ev["wall_s"],
            "slos": {k: v["value"] for k, v in ev["slos"].items()},
            "failed": [k for k, v in ev["slos"].items() if not v["met"]],
        })
        if stage == last_stage:
            full[qps] = ev
        row.setdefault("provenance", ev.get("provenance"))
        return ev["met"]

    try:
        initial = task["initial_qps"]
        if initial is None:
            try:
                cap = estimate_capacity(task["scenario"], host=host)
            except VidurError as exc:
                raise _Skip(str(exc)) from None
            initial = CAPACITY_HEADROOM * cap if cap else task["fallback_qps"]
        row["initial_qps"] = initial
        res = find_max_qps(
            probe,
            initial_qps=initial,
            tolerances=task["tolerances"],
            expansion=task["expansion"],
            min_qps=task["min_qps"],
            max_qps=task["max_qps"],
            max_probes=task["max_probes"],
        )
    except _Skip as exc:
        row.update(status="skipped", reason=exc.args[0], max_qps=0.0, hi_qps=None, probes=probes,
                   wall_s=round(time.perf_counter() - t0, 3))
        return row
    reason = {
        "ok": "",
        "capped": f"meets the SLOs at search.max_qps = {task['max_qps']:g}; raise it",
        "infeasible": f"misses the SLOs even at search.min_qps = {task['min_qps']:g}",
        "unresolved": f"not resolved within search.max_probes = {task['max_probes']}",
    }[res.status]
    at_max = full.get(res.lo) if res.lo else None
    at_hi = full.get(res.hi) if res.hi is not None else None
    if res.status == "infeasible" and at_hi is not None:
        # which SLO failed, and the value it reached, at the lowest probe (issue #15 item 3d)
        row["infeasible_slos"] = failed_slos(at_hi)
        if row["infeasible_slos"]:
            reason += f" (probe at {res.hi:.4g} QPS): " + "; ".join(
                _miss(s, *row["infeasible_slos"][s.column]) for s in slos if s.column in row["infeasible_slos"])
    if at_max is not None and res.status in ("ok", "capped"):
        row["steady"], longer = _steady_guard(task, res.lo, at_max, slos, host)
        if longer is not None:  # met and steady with a longer probe: the more trustworthy evaluation
            at_max = longer
        v = row["steady"]
        if not v["ok"]:
            reason = (f"fails its SLOs at {res.lo:.4g} QPS with a {2 ** v['doublings']}x longer probe "
                      "(max QPS overstated; lengthen workload.duration)") if v["failed_longer"] else (
                f"still unsteady at {res.lo:.4g} QPS after {v['doublings']} doubling(s) of the probe: later arrivals "
                f"wait {_fmt_s(v['second_half_s'])} on average vs {_fmt_s(v['first_half_s'])} (a queue still growing)")
    if res.lo and res.status in ("ok", "capped"):
        if task.get("operating_point", 0.9) >= 1.0 and at_max is not None:  # the max-QPS probe itself
            row["at_operating_point"] = {k: v for k, v in at_max.items() if k != "provenance"} | {"fraction": 1.0}
        else:
            row["at_operating_point"] = _operating_point(task, res.lo, slos, host)
    row.update(
        status=res.status,
        reason=reason,
        max_qps=res.lo,
        hi_qps=res.hi,
        at_max=at_max,
        failed_at_hi=list(failed_slos(at_hi or {})),
        probes=probes,
        wall_s=round(time.perf_counter() - t0, 3),
    )
    return row


#: a probe at max QPS that is not steady is lengthened (doubled) at most this many times
STEADY_DOUBLINGS = 2


def _steady_guard(task, max_qps: float, at_max: dict, slos, host) -> tuple[dict[str, Any], dict | None]:
    """Issue #15 item 3b: when the probe at max QPS is not steady (its later arrivals wait longer,
    :func:`vidur.search.probe.steadiness`), probe the same QPS with 2x, then 4x the window until it
    is steady. Returns ``(verdict, evaluation)``: ``verdict["ok"]`` False when it stays unsteady or
    fails its SLOs with a longer window (the max QPS is then overstated); the evaluation of a longer
    probe that met the SLOs steadily, else None."""
    first = at_max.get("steady") or {"ok": True}
    verdict = {"ok": bool(first["ok"]), "doublings": 0, "first_half_s": first.get("first_half_s"),
               "second_half_s": first.get("second_half_s"), "failed_longer": False}
    if verdict["ok"]:
        return verdict, None
    for k in range(1, STEADY_DOUBLINGS + 1):
        m = 2 ** k
        duration, n = probe_size(task["duration"] * m if task["duration"] is not None else None,
                                 task["requests"] * m if task["requests"] is not None else None,
                                 1.0, max_qps, task["min_requests"])
        try:
            ev = run_probe(task["scenario"], max_qps, duration=duration, num_requests=n, drain=task["drain"],
                           slos=slos, host=host)
        except VidurError:
            break
        st = ev.get("steady") or {"ok": True}
        verdict.update(doublings=k, first_half_s=st.get("first_half_s"), second_half_s=st.get("second_half_s"))
        if not ev["met"]:
            verdict.update(ok=False, failed_longer=True)
            return verdict, None
        if st["ok"]:
            verdict["ok"] = True
            ev.pop("provenance", None)
            return verdict, ev
    return verdict, None


def _fmt_s(v: float | None) -> str:
    return "?" if v is None else f"{v:.3g} s"


def _operating_point(task: dict[str, Any], max_qps: float, slos, host) -> dict[str, Any] | None:
    """One full-size probe at ``operating_point`` × max QPS: the latencies the Pareto front compares
    (issue #15 item 3e); None when it cannot run."""
    frac = task.get("operating_point", 0.9)
    qps = max_qps * frac
    duration, n = probe_size(task["duration"], task["requests"], 1.0, qps, task["min_requests"])
    try:
        ev = run_probe(task["scenario"], qps, duration=duration, num_requests=n, drain=task["drain"], slos=slos, host=host)
    except VidurError:
        return None
    ev.pop("provenance", None)
    ev["fraction"] = frac
    return ev


def failed_slos(ev: dict[str, Any]) -> dict[str, list]:
    """``{slo column: [value reached, bound]}`` of the SLOs a probe missed (value None: no finished sample)."""
    return {k: [v["value"], v["bound"]] for k, v in ev.get("slos", {}).items() if not v["met"]}


def _miss(s: SLOTarget, value: float | None, bound: float) -> str:
    name = f"{s.metric} p{s.quantile * 100:g}"
    if value is None:
        return f"{name} failed (no request finished within the time cap; bound {bound:g} s)"
    if value <= bound:  # failed on requests still unfinished at the time cap (counted as violating)
        return f"{name} failed: requests unfinished at the time cap (finished ones reached {value:.4g} s; bound {bound:g} s)"
    return f"{name} reached {value:.4g} s > {bound:g} s"


class _Skip(Exception):
    pass
