"""The headline metrics of a run: the numbers a policy comparison puts side by side.

Each is read from :func:`vidur.metrics.summary.summarize`'s dict by a path,
so it is defined there once; this table only names, orders and formats them
for ``vidur sweep`` and ``vidur run --seeds``. A metric whose section is
absent from a run (the prefix-cache hit rate without prefix caching, goodput
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


HEADLINE: tuple[Headline, ...] = (
    Headline("ttft_p50_s", "TTFT p50", "s", ("latency", "ttft", "p50")),
    Headline("ttft_p99_s", "TTFT p99", "s", ("latency", "ttft", "p99")),
    Headline("tpot_p50_s", "TPOT p50", "s", ("latency", "tpot", "p50")),
    Headline("tpot_p99_s", "TPOT p99", "s", ("latency", "tpot", "p99")),
    Headline("e2e_p50_s", "E2E p50", "s", ("latency", "e2e", "p50")),
    Headline("e2e_p99_s", "E2E p99", "s", ("latency", "e2e", "p99")),
    Headline("throughput_rps", "throughput", "req/s", ("throughput", "requests_per_s"), lower=False),
    Headline("output_tokens_per_s", "output tok/s", "tok/s", ("throughput", "output_tokens_per_s"), lower=False),
    Headline("goodput_rps", "goodput", "req/s", ("goodput", "requests_per_s"), lower=False),
    Headline("preemptions", "preemptions", "", ("preemptions", "total")),
    Headline("prefix_hit_rate", "prefix hit rate", "", ("prefix_cache", "hit_rate"), lower=False),
)

BY_NAME = {h.name: h for h in HEADLINE}


def headline_values(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """``{name: value}`` of every headline metric in ``summary``."""
    return {h.name: h.read(summary) for h in HEADLINE}


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
