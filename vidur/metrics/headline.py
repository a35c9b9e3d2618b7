"""The headline metrics of a run: the numbers a policy comparison puts side by side.

The per-request ones come from the metric table (:data:`vidur.metrics.table.METRICS`):
every quantile in an entry's ``headline`` role, read at run time, so a metric
added there with that role shows up in ``vidur sweep`` and ``vidur run
--seeds`` by itself. The run-level figures (throughput, goodput, preemptions,
prefix-cache hit rate) follow. Each is read from
:func:`vidur.metrics.summary.summarize`'s dict by a path; a metric whose
section is absent from a run (the hit rate without prefix caching, goodput
without SLOs) reads as None and its row is left out of the tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class Headline:
    """One headline metric: its column ``name``, display ``label`` and ``unit``
    (``s`` shown in ms), the ``path`` of keys into the summary dict, and
    whether ``lower`` is better."""

    name: str
    label: str
    unit: str
    path: tuple[str, ...]
    lower: bool = True

    def read(self, summary: Mapping[str, Any]) -> float | None:
        """This metric's value in ``summary`` (None when absent)."""
        x: Any = summary
        for k in self.path:
            if not isinstance(x, Mapping) or x.get(k) is None:
                return None
            x = x[k]
        return float(x)


#: the run-level headline figures (not per-request metrics)
RUN_LEVEL: tuple[Headline, ...] = (
    Headline("throughput_rps", "throughput", "req/s", ("throughput", "requests_per_s"), lower=False),
    Headline("output_tokens_per_s", "output tok/s", "tok/s", ("throughput", "output_tokens_per_s"), lower=False),
    Headline("goodput_rps", "goodput", "req/s", ("goodput", "requests_per_s"), lower=False),
    Headline("preemptions", "preemptions", "", ("preemptions", "total")),
    Headline("prefix_hit_rate", "prefix hit rate", "", ("prefix_cache", "hit_rate"), lower=False),
)

def table_headline() -> tuple[Headline, ...]:
    """One row per (metric, quantile) of the metric table's ``headline`` roles."""
    from vidur.metrics.table import METRICS

    out = []
    for m in METRICS:
        for q in m.headline:
            p = f"p{q * 100:g}"
            section = "latency" if m.unit == "s" else "request_metrics"
            suffix = "_s" if m.unit == "s" else ""
            out.append(Headline(f"{m.name}_{p}{suffix}", f"{m.label} {p}", m.unit, (section, m.name, p)))
    return tuple(out)


def headline_metrics() -> tuple[Headline, ...]:
    """Every headline metric, in report order: the table's, then :data:`RUN_LEVEL`."""
    return table_headline() + RUN_LEVEL


def by_name() -> dict[str, Headline]:
    """The headline metrics keyed by name."""
    return {h.name: h for h in headline_metrics()}


def cdf_metrics() -> tuple[str, ...]:
    """The per-request metrics whose distributions a sweep stores and overlays."""
    from vidur.metrics.table import METRICS

    return tuple(m.name for m in METRICS if m.headline and m.per_request)


def headline_values(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """``{name: value}`` of every headline metric in ``summary``."""
    return {h.name: h.read(summary) for h in headline_metrics()}


def format_value(h: Headline, x: float | None) -> str:
    """``x`` in ``h``'s display unit (seconds as ms)."""
    if x is None:
        return "-"
    if h.unit == "s":
        v = x * 1e3
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    if h.name == "prefix_hit_rate":
        return f"{100 * x:.1f}%"
    if h.name == "preemptions":
        return f"{x:,.0f}" if abs(x) >= 10 else f"{x:.3g}"
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3g}"


def display_label(h: Headline) -> str:
    """``h``'s label with its display unit."""
    unit = "ms" if h.unit == "s" else h.unit
    return f"{h.label} ({unit})" if unit else h.label


def format_interval(h: Headline, mean: float | None, half: float | None) -> str:
    """``mean ± half`` in ``h``'s display unit (just the mean when ``half`` is None)."""
    if mean is None:
        return "-"
    if half is None:
        return format_value(h, mean)
    if h.name == "prefix_hit_rate":
        return f"{format_value(h, mean)} ± {100 * half:.1f}"
    return f"{format_value(h, mean)} ± {format_value(h, half)}"
