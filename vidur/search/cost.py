"""Cost model and the Pareto frontier.

- **cost_per_hour** = GPUs × $/GPU-hour of the device (catalog list price
  or the spec's ``prices`` override).
- **qps_per_dollar** = max QPS / cost_per_hour: requests per second
  sustained per dollar-per-hour spent (higher is better).
- **dollars_per_million_requests** = cost_per_hour / (max QPS × 3600) × 10⁶.
"""

from __future__ import annotations

import math
from typing import Any


def cost_fields(max_qps: float, gpus: int, price_per_gpu_hour: float) -> dict[str, Any]:
    """The cost columns of one configuration."""
    cost = gpus * price_per_gpu_hour
    ok = max_qps and max_qps > 0 and cost > 0
    return {
        "price_per_gpu_hour": price_per_gpu_hour,
        "cost_per_hour": cost,
        "qps_per_dollar": max_qps / cost if ok else None,
        "dollars_per_million_requests": cost / (max_qps * 3600.0) * 1e6 if ok else None,
    }


def pareto_front(points: list[tuple[float, float, Any]]) -> list[Any]:
    """Items not dominated when minimising the first value and maximising the second.

    ``points`` are ``(latency, qps_per_dollar, item)``; points with a missing
    or non-finite value are left out. Returns the frontier's items ordered by
    latency (ties: higher QPS per dollar first).
    """
    clean = [p for p in points if p[0] is not None and p[1] is not None and math.isfinite(p[0]) and math.isfinite(p[1])]
    clean.sort(key=lambda p: (p[0], -p[1]))
    front, best = [], -math.inf
    for lat, qpd, item in clean:
        if qpd > best:
            front.append(item)
            best = qpd
    return front


def eligible(row: dict[str, Any]) -> bool:
    """A search result row that ran, reached a positive QPS and met every SLO."""
    return row["status"] in ("ok", "capped") and (row["max_qps"] or 0) > 0 and row["slos_met"]


def pick_best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest QPS per dollar among configurations meeting the SLOs; ties: fewer
    GPUs, then higher max QPS, then grid order."""
    cands = [r for r in rows if eligible(r)]
    if not cands:
        return None
    return min(cands, key=lambda r: (-r["qps_per_dollar"], r["gpus"], -r["max_qps"], r["index"]))
