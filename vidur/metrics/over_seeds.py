"""A scenario run over several seeds: each headline metric's mean and 95 % interval (``vidur run --seeds``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vidur.metrics.headline import display_label, headline_metrics, format_interval, format_value, headline_values
from vidur.metrics.intervals import LEVEL, mean_interval


def interval_rows(seeds: Sequence[int], summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per headline metric present in the runs: mean, half-width, bounds and the per-seed values."""
    values = [headline_values(s) for s in summaries]
    out = []
    for h in headline_metrics():
        vals = [v[h.name] for v in values]
        if all(x is None for x in vals):
            continue
        iv = mean_interval(vals)
        out.append({"metric": h.name, "mean": iv.mean, "half_width": iv.half, "low": iv.low, "high": iv.high,
                    "seeds": iv.n, "level": LEVEL, "per_seed": dict(zip([int(s) for s in seeds], vals))})
    return out


def format_interval_table(rows: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> str:
    """The rows as an aligned text table (latencies in ms)."""
    by = {h.name: h for h in headline_metrics()}
    header = ["metric", "mean ± 95% CI", "low", "high", "min", "max"]
    body = []
    for r in rows:
        h = by[r["metric"]]
        vals = [x for x in r["per_seed"].values() if x is not None]
        body.append([display_label(h), format_interval(h, r["mean"], r["half_width"]), format_value(h, r["low"]),
                     format_value(h, r["high"]), format_value(h, min(vals)), format_value(h, max(vals))])
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = [f"over {len(seeds)} seeds ({', '.join(str(s) for s in seeds)}): mean ± 95 % confidence half-width "
             "(Student t, n - 1 degrees of freedom)"]
    for i, row in enumerate([header, None, *body]):
        if row is None:
            lines.append("  ".join("-" * w for w in widths))
            continue
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines) + "\n"
