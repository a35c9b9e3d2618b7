"""Cost model and the Pareto frontier.

- **cost_per_hour** = GPUs × $/GPU-hour of the device (catalog list price
  or the spec's ``prices`` override).
- **qps_per_dollar** = max QPS / cost_per_hour: requests per second
  sustained per dollar-per-hour spent (higher is better).
- **dollars_per_million_requests** = cost_per_hour / (max QPS × 3600) × 10⁶.
- **dollars_per_million_tokens** = the same per million tokens served (input +
  output tokens; the mean per request of the probe at max QPS).
- **fleet for a target QPS** (``search.target_qps``): replicas =
  ceil(target / (max QPS / replicas)), i.e. the configuration's per-replica
  max QPS taken to scale linearly with replicas (an extrapolation: the router
  and the workload's burstiness decide how well it holds; search the fleet
  size directly to check it), and that fleet's GPUs and $/h.
"""

from __future__ import annotations

import math
from typing import Any


def cost_fields(max_qps: float, gpus: int, price_per_gpu_hour: float, tokens_per_request: float | None = None) -> dict[str, Any]:
    """The cost columns of one configuration."""
    cost = gpus * price_per_gpu_hour
    ok = max_qps and max_qps > 0 and cost > 0
    per_m_req = cost / (max_qps * 3600.0) * 1e6 if ok else None
    return {
        "price_per_gpu_hour": price_per_gpu_hour,
        "cost_per_hour": cost,
        "qps_per_dollar": max_qps / cost if ok else None,
        "dollars_per_million_requests": per_m_req,
        "dollars_per_million_tokens": per_m_req / tokens_per_request if per_m_req and tokens_per_request else None,
    }


def fleet_fields(target_qps: float, max_qps: float, replicas: int, gpus: int, price_per_gpu_hour: float) -> dict[str, Any]:
    """The fleet of this configuration's replicas that serves ``target_qps`` (see the module docstring)."""
    if not (max_qps and max_qps > 0 and replicas > 0):
        return {"fleet_replicas": None, "fleet_gpus": None, "fleet_cost_per_hour": None}
    per_replica = max_qps / replicas
    n = max(1, math.ceil(target_qps / per_replica * (1 - 1e-12)))  # exact multiples need no extra replica
    fleet_gpus = n * (gpus // replicas)
    return {"fleet_replicas": n, "fleet_gpus": fleet_gpus, "fleet_cost_per_hour": fleet_gpus * price_per_gpu_hour}


def cheapest_fleets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows meeting the SLOs with a fleet, cheapest fleet first (ties: fewer GPUs, grid order)."""
    cands = [r for r in rows if eligible(r) and r.get("fleet_cost_per_hour") is not None]
    return sorted(cands, key=lambda r: (r["fleet_cost_per_hour"], r["fleet_gpus"], r["index"]))


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
