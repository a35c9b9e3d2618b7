"""The metric table: every per-request metric defined once.

Summary (``summary.json``), the requests table, the terminal report, plots,
the capacity search's probes and result columns, and ``vidur validate``'s
comparison all iterate :data:`METRICS`; adding a metric is one entry here.

A per-request metric is a formula over the run's request columns
(:data:`vidur.metrics.records.REQUEST_COLUMNS` and any optional column such
as ``cached_tokens``)::

    value = (end - start) / (per - per_offset)

``start`` and ``per`` are optional. A value is defined for completed
requests whose divisor is positive (NaN otherwise). A metric whose columns
a run does not have (an optional column) is left out of that run's outputs.
ITL is the one token-level metric: the engine records it as weighted
samples, so it has no formula (``per_request=False``).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import numpy as np


@attrs.frozen(kw_only=True)
class Metric:
    """One metric and everything the outputs need to know about it."""

    #: key in summary.json, the requests table, SLOs and search columns (``ttft``)
    name: str
    #: short label for the terminal report, plot axes and search tables (``TTFT``)
    label: str
    #: long title for plots (``Time to first token``)
    title: str
    #: one line for summary.json's ``definitions``
    definition: str
    #: ``s`` (a latency: summarised in ``latency``, may be an SLO) or another unit
    #: (``tokens``, ``fraction``: summarised in ``request_metrics``)
    unit: str = "s"
    #: column: the later timestamp, or the count (per-request metrics only)
    end: str | None = None
    #: column subtracted from ``end``
    start: str | None = None
    #: column dividing the value, less ``per_offset``
    per: str | None = None
    per_offset: int = 0
    #: may be named in ``metrics.slos`` / a search's ``slos`` (latencies only)
    slo: bool = True
    #: a CDF plot ``plots/cdf_<name>.png``
    plot: bool = False
    #: quantiles every capacity-search result reports (``<name>_p99_s`` columns)
    probe: tuple[float, ...] = ()
    #: compared against real runs by ``vidur validate``
    compare: bool = False
    #: quantiles ``vidur sweep`` and ``vidur run --seeds`` report with intervals over seeds
    #: (and whose CDFs the sweep overlays); among the summary's percentiles (0.5, 0.9, 0.95, 0.99)
    headline: tuple[float, ...] = ()
    #: search probes: an unfinished request's value is at least ``(cap - start) / per``
    #: (False: unknown, taken as 0 for the optimistic bound)
    censor_lower: bool = True

    @property
    def per_request(self) -> bool:
        """True for a formula over request columns; False for ITL."""
        return self.end is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """The request columns the formula reads."""
        return tuple(c for c in (self.end, self.start, self.per) if c is not None)

    def available(self, requests: Mapping[str, np.ndarray]) -> bool:
        """Whether a run's request columns hold everything this metric reads."""
        return self.per_request and all(c in requests for c in self.columns)

    def divisor(self, requests: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """``per - per_offset`` per request (None without ``per``)."""
        if self.per is None:
            return None
        return np.asarray(requests[self.per], dtype=np.float64) - self.per_offset

    def raw(self, requests: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(end - start) / divisor`` for every request, NaN where the divisor is not positive."""
        x = np.asarray(requests[self.end], dtype=np.float64)
        if self.start is not None:
            x = x - np.asarray(requests[self.start], dtype=np.float64)
        d = self.divisor(requests)
        if d is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                x = np.where(d > 0, x / np.where(d > 0, d, 1.0), np.nan)
        return np.array(x, dtype=np.float64)

    def values(self, requests: Mapping[str, np.ndarray], completed: np.ndarray) -> np.ndarray:
        """The metric per request: defined for completed requests only."""
        x = self.raw(requests)
        x[~completed] = np.nan
        return x


#: Every metric, in the order reports list them.
METRICS: tuple[Metric, ...] = (
    Metric(
        name="ttft", label="TTFT", title="Time to first token", definition="first_token - arrival",
        end="first_token", start="arrival", plot=True, probe=(0.5, 0.9, 0.99), compare=True, headline=(0.5, 0.99),
    ),
    Metric(
        name="tpot", label="TPOT", title="Time per output token",
        definition="(e2e - ttft) / (output_tokens - 1); single-token requests excluded",
        end="completion", start="first_token", per="output_tokens", per_offset=1, plot=True,
        probe=(0.5, 0.9, 0.99), compare=True, headline=(0.5, 0.99), censor_lower=False,
    ),
    Metric(
        name="e2e", label="E2E", title="End-to-end latency", definition="completion - arrival",
        end="completion", start="arrival", plot=True, probe=(0.5, 0.9, 0.99), compare=True, headline=(0.5, 0.99),
    ),
    Metric(
        name="normalized_e2e", label="E2E / out token", title="End-to-end latency per output token",
        definition="e2e / output_tokens", end="completion", start="arrival", per="output_tokens",
    ),
    Metric(
        name="scheduling_delay", label="sched. delay", title="Scheduling delay",
        definition="first_scheduled - arrival", end="first_scheduled", start="arrival", plot=True, probe=(0.5, 0.99),
    ),
    Metric(
        name="itl", label="ITL", title="Inter-token latency", definition="every gap between consecutive output tokens",
        plot=True, probe=(0.99,),
    ),
)


# The consumers read METRICS when they run (not when they are imported), so
# the table is the one place to change; the tuples below are its names.


def slo_metrics() -> tuple[str, ...]:
    """Metrics an SLO may name."""
    return tuple(m.name for m in METRICS if m.slo and m.unit == "s")


def reported_quantiles() -> tuple[tuple[str, float], ...]:
    """(metric, quantile) pairs every capacity-search result reports."""
    return tuple((m.name, q) for m in METRICS for q in m.probe)


def by_name() -> dict[str, Metric]:
    """The table keyed by metric name."""
    return {m.name: m for m in METRICS}


BY_NAME: dict[str, Metric] = by_name()
#: metrics an SLO may name
SLO_METRICS: tuple[str, ...] = slo_metrics()
#: metrics with a value per request
PER_REQUEST_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.per_request)


def request_metrics_of(requests: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every per-request metric the columns allow, plus the boolean ``completed``."""
    completed = np.isfinite(np.asarray(requests["completion"], dtype=np.float64))
    out = {m.name: m.values(requests, completed) for m in METRICS if m.available(requests)}
    out["completed"] = completed
    return out
