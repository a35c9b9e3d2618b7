"""One probe: simulate a configuration at one QPS and check the SLOs.

Every probe of a configuration uses the same seeded workload: the same seed,
so the same sequence of lengths, and the arrivals of the swept process at the
probed QPS (for Poisson, the same exponential draws scaled by 1/QPS). A probe
is exactly what ``vidur run`` does with the scenario :func:`probe_scenario`
returns.

Simulated time is capped (``simulation.max_time`` = arrival window + drain).
A request unfinished at the cap has a *censored* metric: for scheduling
delay, TTFT and E2E at least ``cap - arrival``; for TPOT and ITL unknown. An
SLO is **met** only if its quantile holds with every censored sample taken
as +infinity (a pessimistic bound), so a cut-off probe never passes by
leaving its slowest requests out. The value reported for a met SLO is that
pessimistic quantile; for a failed one, the optimistic quantile (censored
samples at their lower bounds), which already exceeds the bound when the
failure is certain. With ``drain >= bound`` (the default drain is at least
twice the largest bound), scheduling-delay, TTFT and E2E verdicts are exact.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np

from vidur.metrics import table
from vidur.metrics.table import Metric
from vidur.search.spec import SLOTarget
from vidur.workload.arrivals import arrival_at_rate

BIG = 1e18  # stands for +inf in quantiles (inf would make linear interpolation NaN)

#: (metric, quantile) pairs reported for every configuration at its maximum QPS
#: (each metric's ``probe`` quantiles in the metric table)
REPORTED = table.reported_quantiles()


def metric_column(metric: str, quantile: float) -> str:
    return f"{metric}_p{quantile * 100:g}_s"


def probe_size(duration: float | None, requests: int | None, fraction: float, qps: float, min_requests: int):
    """``(duration, num_requests)`` of a probe: ``fraction`` of the full size, at least ``min_requests``."""
    if duration is not None:
        return max(duration * fraction, min_requests / qps), None
    return None, max(int(min_requests), round(requests * fraction))


def probe_scenario(base: dict, qps: float, duration: float | None, num_requests: int | None, max_time: float | None) -> dict:
    """The raw scenario of one probe: ``base`` with the arrival rate, size and time cap set."""
    raw = copy.deepcopy(base)
    wl = raw["workload"]
    wl["arrival"] = arrival_at_rate(wl["arrival"], qps)
    wl["duration"], wl["num_requests"] = duration, num_requests
    if duration is None:
        wl.pop("duration")
    else:
        wl.pop("num_requests")
    raw.setdefault("simulation", {})
    raw["simulation"] = dict(raw["simulation"], max_time=max_time, progress=False)
    return raw


class Censored:
    """Per-request metric samples of a (possibly cut-off) run, as optimistic and
    pessimistic arrays; ITL as weighted samples."""

    def __init__(self, records, cap: float):
        r = records.requests
        arr = np.asarray(r["arrival"], dtype=np.float64)
        comp = np.asarray(r["completion"], dtype=np.float64)
        done = np.isfinite(comp)
        self.num_requests = int(arr.size)
        self.unfinished = int((~done).sum())
        self._pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for m in table.METRICS:  # per-request metrics: known once their end column is
            if m.available(r):
                self._pairs[m.name] = _censored(m, r, cap)
        self.itl_values = np.asarray(records.itl_values, dtype=np.float64)
        self.itl_counts = np.asarray(records.itl_counts, dtype=np.int64)
        window_end = float(comp[done].max()) if done.any() else float("nan")
        t0 = float(arr.min()) if arr.size else 0.0
        self.throughput = (done.sum() / (window_end - t0)) if done.any() and window_end > t0 else 0.0
        tokens = np.asarray(r["prompt_tokens"], dtype=np.float64) + np.asarray(r["output_tokens"], dtype=np.float64)
        self.tokens_per_request = float(tokens.mean()) if tokens.size else float("nan")  # input + output

    def halves(self, metric: str, arrival: np.ndarray) -> tuple[float, float]:
        """Mean of ``metric`` (optimistic: unfinished requests at their lower bound) over the
        requests arriving in the first and in the second half of the arrival window."""
        opt, _ = self._pairs[metric]
        if opt.shape != arrival.shape or arrival.size < 4:
            return float("nan"), float("nan")
        mid = 0.5 * (float(arrival.min()) + float(arrival.max()))
        first, second = opt[arrival <= mid], opt[arrival > mid]
        first, second = first[np.isfinite(first)], second[np.isfinite(second)]
        if not first.size or not second.size:
            return float("nan"), float("nan")
        return float(first.mean()), float(second.mean())

    def quantile(self, metric: str, q: float) -> tuple[float, float]:
        """``(optimistic, pessimistic)`` quantile ``q`` of ``metric``; NaN without samples."""
        if metric == "itl":
            from vidur.metrics.summary import weighted_percentile

            v, c = self.itl_values, self.itl_counts
            opt = weighted_percentile(v, c, q * 100) if c.sum() else float("nan")
            if self.unfinished:
                v = np.concatenate([v, [BIG]])
                c = np.concatenate([c, [self.unfinished]])
            pes = weighted_percentile(v, c, q * 100) if c.sum() else float("nan")
            return float(opt), float(pes)
        opt, pes = self._pairs[metric]
        keep = np.isfinite(opt)
        if not keep.any():
            return float("nan"), float("nan")
        return float(np.quantile(opt[keep], q)), float(np.quantile(pes[keep], q))


def _censored(m: Metric, r, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """(optimistic, pessimistic) samples of metric ``m`` over the requests where
    its divisor is positive: a request not yet at its ``end`` counts as at
    least ``(cap - start) / divisor`` (``censor_lower``; else 0) and at most +inf."""
    value = m.raw(r)
    known = np.isfinite(np.asarray(r[m.end], dtype=np.float64))
    if m.censor_lower:
        start = np.asarray(r[m.start], dtype=np.float64) if m.start is not None else 0.0
        lower = np.maximum(cap - start, 0.0) if math.isfinite(cap) else np.full(known.shape, BIG)
        d = m.divisor(r)
        if d is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                lower = lower / d
    else:
        lower = 0.0
    keep = np.ones(known.shape, dtype=bool) if m.per is None else m.divisor(r) > 0
    with np.errstate(invalid="ignore"):
        opt = np.where(known, value, lower)[keep]
        pes = np.where(known, value, BIG)[keep]
    return opt, pes


def _json_float(x: float) -> float | None:
    if x is None or not math.isfinite(x) or x >= BIG / 10:
        return None
    return float(x)


def evaluate(records, cap: float, slos: tuple[SLOTarget, ...]) -> dict[str, Any]:
    """SLO verdicts and the reported latency quantiles of one run (see the module docstring)."""
    c = Censored(records, cap)
    slo_out = {}
    met_all = True
    for s in slos:
        opt, pes = c.quantile(s.metric, s.quantile)
        met = math.isfinite(pes) and pes <= s.max_s
        met_all &= met
        slo_out[s.column] = {"value": _json_float(pes if met else opt), "bound": s.max_s, "met": bool(met)}
    stats = {}
    for metric, q in table.reported_quantiles():
        opt, _ = c.quantile(metric, q)
        stats[metric_column(metric, q)] = _json_float(opt)
    out = {
        "met": bool(met_all),
        "slos": slo_out,
        "stats": stats,
        "num_requests": c.num_requests,
        "unfinished": c.unfinished,
        "throughput_rps": _json_float(c.throughput),
        "tokens_per_request": _json_float(c.tokens_per_request),
    }
    out["steady"] = steadiness(c, np.asarray(records.requests["arrival"], dtype=np.float64), slos)
    from vidur.metrics.prefix import prefix_cache_summary

    cache = prefix_cache_summary(records)
    if cache is not None:  # configurations with prefix caching: hit rate and evictions at this load
        out["prefix_cache"] = cache["cluster"]
    return out


#: a probe is not steady when its second half's mean scheduling delay exceeds its first half's by more
#: than this fraction of the first half's and more than STEADY_FLOOR of the smallest SLO bound
STEADY_TOLERANCE = 0.5
STEADY_FLOOR = 0.05


def steadiness(c: Censored, arrival: np.ndarray, slos) -> dict[str, Any]:
    """Whether a probe looks like steady state (issue #15 item 3b): the mean scheduling delay of
    the requests arriving in the second half of the window against the first half's. A queue
    still growing at the end of a probe shows as a later half that waits longer; such a probe
    would fail with a longer window."""
    first, second = c.halves("scheduling_delay", arrival) if "scheduling_delay" in c._pairs else (math.nan, math.nan)
    floor = STEADY_FLOOR * min((s.max_s for s in slos), default=1.0)
    ok = not (math.isfinite(first) and math.isfinite(second)) or second - first <= max(STEADY_TOLERANCE * first, floor)
    return {"ok": bool(ok), "first_half_s": _json_float(first), "second_half_s": _json_float(second)}


def run_probe(base: dict, qps: float, *, duration, num_requests, drain: float, slos, host=None) -> dict[str, Any]:
    """Simulate ``base`` at ``qps`` and evaluate the SLOs; returns a JSON-able dict.

    The simulated-time cap is ``duration + drain`` for duration-sized probes,
    ``last arrival + drain`` for request-count-sized ones.
    """
    from vidur.engine.simulation import Simulation
    from vidur.scenario import scenario_from_dict

    t0 = time.perf_counter()
    if duration is not None:
        cap = duration + drain
        sim = Simulation(scenario_from_dict(probe_scenario(base, qps, duration, None, cap), host), host)
    else:
        first = Simulation(scenario_from_dict(probe_scenario(base, qps, None, num_requests, None), host), host)
        cap = float(first.table.arrival[-1]) + drain
        sim = Simulation(scenario_from_dict(probe_scenario(base, qps, None, num_requests, cap), host), host,
                         requests=first.table)
    result = sim.run(progress=False)
    out = evaluate(result.records, cap, slos)
    out.update({"qps": float(qps), "duration": duration, "max_time": cap, "wall_s": round(time.perf_counter() - t0, 4)})
    out["provenance"] = sim.provenance.to_dict()  # which estimator priced it, from which data, why
    return out


def estimate_capacity(base: dict, requests_per_replica: int = 400, host=None) -> float | None:
    """A quick guess of a configuration's saturation throughput (requests/s).

    Every request arrives at once (``static`` arrivals, the workload's
    lengths, ``requests_per_replica`` × replicas requests); the rate is the
    number of requests completed by the time 80 % have completed, divided by
    that time (leaving out the drain tail). Only the first probe's QPS comes
    from it, so it affects the search's cost, never its answer's validity.
    """
    import numpy as np

    from vidur.engine.simulation import Simulation
    from vidur.scenario import scenario_from_dict

    raw = copy.deepcopy(base)
    n = requests_per_replica * int(raw["cluster"].get("num_replicas", 1))
    wl = raw["workload"]
    wl["arrival"] = {"name": "static"}
    wl.pop("duration", None)
    wl["num_requests"] = n
    raw["simulation"] = dict(raw.get("simulation") or {}, progress=False, max_time=None)
    res = Simulation(scenario_from_dict(raw, host), host).run(progress=False)
    comp = np.sort(np.asarray(res.records.requests["completion"], dtype=np.float64))
    comp = comp[np.isfinite(comp)]
    k = int(0.8 * len(comp))
    if k < 1 or not comp[k - 1] > 0:
        return None
    return float(k / comp[k - 1])
