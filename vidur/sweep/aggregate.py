"""Cells -> per-policy intervals over seeds and paired differences against a baseline."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vidur.metrics.headline import headline_metrics
from vidur.metrics.intervals import mean_interval, paired_test


def _groups(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, dict[int, dict]]]:
    """``{(workload, qps): {policy: {seed: metrics}}}`` of the cells that ran."""
    out: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in rows:
        if r.get("status") != "ok":
            continue
        out.setdefault((r["workload"], r["qps"]), {}).setdefault(r["policy"], {})[int(r["seed"])] = r["metrics"]
    return out


def summary_rows(rows: Sequence[dict[str, Any]], policies: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (workload, load, policy, metric): mean and 95 % interval over seeds."""
    out = []
    for (wl, qps), by_policy in _groups(rows).items():
        for pol in policies:
            seeds = by_policy.get(pol)
            if not seeds:
                continue
            for h in headline_metrics():
                vals = [m.get(h.name) for m in seeds.values()]
                if all(v is None for v in vals):
                    continue
                iv = mean_interval(vals)
                out.append({"workload": wl, "qps": qps, "policy": pol, "metric": h.name, "mean": iv.mean,
                            "half_width": iv.half, "low": iv.low, "high": iv.high, "seeds": iv.n})
    return out


def paired_rows(rows: Sequence[dict[str, Any]], policies: Sequence[str], baseline: str) -> list[dict[str, Any]]:
    """One row per (workload, load, policy other than ``baseline``, metric): the paired
    difference policy − baseline over the seeds both ran, with its interval and p-value."""
    out = []
    for (wl, qps), by_policy in _groups(rows).items():
        base = by_policy.get(baseline)
        if not base:
            continue
        for pol in policies:
            if pol == baseline or pol not in by_policy:
                continue
            cand = by_policy[pol]
            seeds = sorted(set(base) & set(cand))
            for h in headline_metrics():
                a = [cand[s].get(h.name) for s in seeds]
                b = [base[s].get(h.name) for s in seeds]
                if all(v is None for v in a) and all(v is None for v in b):
                    continue
                t = paired_test(a, b)
                out.append({"workload": wl, "qps": qps, "policy": pol, "baseline": baseline, "metric": h.name,
                            "diff": t.diff.mean, "diff_half_width": t.diff.half, "diff_low": t.diff.low,
                            "diff_high": t.diff.high, "relative": t.relative, "p_value": t.p_value,
                            "significant": t.significant(), "seeds": t.diff.n})
    return out
