"""Error reports: simulated against measured, per iteration, per request, per cluster.

Everything here is numpy only (no torch), shared by ``vidur validate`` and
``vidur compare --real``.

- **Iteration** errors compare the estimator's price of a batch with that
  batch's measured time, on the *same* batches (those the real run formed):
  ``|predicted − measured| / measured``, median and p90, split into
  prefill-only, decode-only and mixed batches; ``bias`` is the median of the
  signed error (positive: the simulator is slow).
- **Request** errors compare the distributions of TTFT, TPOT and E2E latency
  (vLLM ``bench serve`` definitions) at p50/p90/p99:
  ``|sim_p − real_p| / real_p``; ``paired_median`` is the median over
  requests of each request's own relative error.
- **Cluster** errors compare request throughput, output-token throughput and
  makespan (first arrival to last completion).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vidur.metrics.table import BY_NAME, METRICS

#: request metrics compared against real runs (``compare`` in the metric table)
REQUEST_METRICS = tuple(m.name for m in METRICS if m.compare)
REQUEST_PERCENTILES = (50, 90, 99)
ITERATION_KINDS = ("prefill_only", "decode_only", "mixed")


def _f(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _rel(pred: float | None, meas: float | None) -> float | None:
    if pred is None or meas is None or meas == 0:
        return None
    return abs(pred - meas) / abs(meas)


def iteration_kind(num_prefill: np.ndarray, num_decode: np.ndarray) -> np.ndarray:
    """Per batch: ``prefill_only``, ``decode_only`` or ``mixed``."""
    p = np.asarray(num_prefill) > 0
    d = np.asarray(num_decode) > 0
    return np.where(p & d, "mixed", np.where(p, "prefill_only", "decode_only"))


def iteration_errors(predicted, measured, kinds) -> dict[str, dict]:
    """Relative error of ``predicted`` against ``measured`` per kind of batch (and ``all``)."""
    pred = np.asarray(predicted, dtype=np.float64)
    meas = np.asarray(measured, dtype=np.float64)
    kinds = np.asarray(kinds)
    ok = np.isfinite(pred) & np.isfinite(meas) & (meas > 0)
    out: dict[str, dict] = {}
    for kind in ITERATION_KINDS + ("all",):
        m = ok if kind == "all" else ok & (kinds == kind)
        n = int(m.sum())
        if n == 0:
            out[kind] = {"count": 0, "median": None, "p90": None, "bias": None, "measured_ms_median": None}
            continue
        signed = (pred[m] - meas[m]) / meas[m]
        err = np.abs(signed)
        out[kind] = {
            "count": n,
            "median": _f(np.median(err)),
            "p90": _f(np.percentile(err, 90)),
            "bias": _f(np.median(signed)),
            "measured_ms_median": _f(np.median(meas[m]) * 1e3),
        }
    return out


class RequestTimings:
    """Per-request latencies (seconds; NaN where undefined) plus what the cluster metrics need.

    ``ttft``, ``tpot`` and ``e2e`` are what real runs report; ``extra`` holds
    further :data:`REQUEST_METRICS` by name."""

    def __init__(self, ttft, tpot, e2e, arrival, completion, output_tokens, extra=None):
        self.values = {"ttft": ttft, "tpot": tpot, "e2e": e2e, **(extra or {})}
        self.values = {k: np.asarray(v, dtype=np.float64) for k, v in self.values.items()}
        self.ttft, self.tpot, self.e2e = self.values["ttft"], self.values["tpot"], self.values["e2e"]
        self.arrival = np.asarray(arrival, dtype=np.float64)
        self.completion = np.asarray(completion, dtype=np.float64)
        self.output_tokens = np.asarray(output_tokens, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.e2e)

    @classmethod
    def from_records(cls, records) -> RequestTimings:
        """From a run's :class:`~vidur.metrics.records.RunRecords`."""
        from vidur.metrics.summary import request_metrics

        m = request_metrics(records)
        r = records.requests
        extra = {k: m[k] for k in REQUEST_METRICS if k in m}
        return cls(m["ttft"], m["tpot"], m["e2e"], r["arrival"], r["completion"], r["output_tokens"], extra)

    def metric(self, name: str) -> np.ndarray | None:
        """Samples of ``name`` (None when this side does not have the metric)."""
        return self.values.get(name)

    def cluster(self) -> dict[str, float | None]:
        done = np.isfinite(self.completion)
        if not done.any():
            return {"completed": 0, "makespan_s": None, "request_throughput": None, "output_throughput": None}
        t0 = float(np.nanmin(self.arrival))
        span = float(np.nanmax(self.completion[done])) - t0
        n = int(done.sum())
        toks = float(self.output_tokens[done].sum())
        return {
            "completed": n,
            "makespan_s": _f(span),
            "request_throughput": _f(n / span) if span > 0 else None,
            "output_throughput": _f(toks / span) if span > 0 else None,
        }


def request_errors(real: RequestTimings, sim: RequestTimings) -> dict[str, dict]:
    """TTFT/TPOT/E2E percentiles of both runs and their relative errors."""
    out: dict[str, dict] = {}
    for name in REQUEST_METRICS:
        a, b = real.metric(name), sim.metric(name)
        if a is None or b is None:
            continue
        ra, rb = a[np.isfinite(a)], b[np.isfinite(b)]
        row: dict[str, Any] = {"count_real": int(ra.size), "count_sim": int(rb.size)}
        for p in REQUEST_PERCENTILES:
            pa = _f(np.percentile(ra, p)) if ra.size else None
            pb = _f(np.percentile(rb, p)) if rb.size else None
            row[f"p{p}"] = {"real": pa, "sim": pb, "error": _rel(pb, pa)}
        if len(a) == len(b):
            both = np.isfinite(a) & np.isfinite(b) & (a > 0)
            row["paired_median"] = _f(np.median(np.abs(b[both] - a[both]) / a[both])) if both.any() else None
        out[name] = row
    return out


def cluster_errors(real: RequestTimings, sim: RequestTimings) -> dict[str, dict]:
    """Throughput and makespan of both runs and their relative errors."""
    a, b = real.cluster(), sim.cluster()
    out: dict[str, dict] = {}
    for key in ("request_throughput", "output_throughput", "makespan_s"):
        out[key] = {"real": a[key], "sim": b[key], "error": _rel(b[key], a[key])}
    out["completed"] = {"real": a["completed"], "sim": b["completed"]}
    return out


# --- presentation -----------------------------------------------------------------


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: Any) -> str:
    if x is None:
        return "-"
    v = 1e3 * x
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


def format_report(report: Mapping) -> str:
    """The terminal table of a validation or comparison report."""
    lines: list[str] = []
    title = report.get("title")
    if title:
        lines += [title, ""]
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    if report.get("notes"):
        lines.append("")
    it = report.get("iterations")
    if it:
        lines.append(f"Per iteration: |predicted - measured| / measured on the same {it['all']['count']} batches")
        rows = []
        for kind in ITERATION_KINDS + ("all",):
            e = it[kind]
            rows.append([kind.replace("_", "-"), str(e["count"]), _pct(e["median"]), _pct(e["p90"]),
                         "-" if e["bias"] is None else f"{100 * e['bias']:+.1f}%",
                         "-" if e["measured_ms_median"] is None else f"{e['measured_ms_median']:.3g}"])
        lines += _table(["batches", "count", "median", "p90", "bias", "measured ms (p50)"], rows)
        fw = report.get("iterations_forward")
        if fw and fw["all"]["count"]:
            lines.append(
                f"  forward pass only (device time, no host overhead): median {_pct(fw['all']['median'])}, "
                f"p90 {_pct(fw['all']['p90'])}"
            )
        lines.append("")
    rq = report.get("requests")
    if rq:
        lines.append("Per request (ms): real vs simulated distributions")
        rows = []
        for name in REQUEST_METRICS:
            row = rq.get(name)
            if row is None:
                continue
            cells = [BY_NAME[name].label]
            for p in REQUEST_PERCENTILES:
                c = row[f"p{p}"]
                cells += [f"{_ms(c['real'])} / {_ms(c['sim'])}", _pct(c["error"])]
            cells.append(_pct(row.get("paired_median")))
            rows.append(cells)
        header = ["metric"]
        for p in REQUEST_PERCENTILES:
            header += [f"p{p} real / sim", "err"]
        header.append("paired p50 err")
        lines += _table(header, rows)
        lines.append("")
    cl = report.get("cluster")
    if cl:
        lines.append("Cluster")
        rows = []
        for key, label, fmt in (
            ("request_throughput", "requests/s", "{:.3g}"),
            ("output_throughput", "output tokens/s", "{:,.1f}"),
            ("makespan_s", "makespan (s)", "{:.3f}"),
        ):
            c = cl[key]
            shown = ["-" if c[side] is None else fmt.format(c[side]) for side in ("real", "sim")]
            rows.append([label, *shown, _pct(c["error"])])
        pc = report.get("prefix_cache")
        if pc:
            for key, label, fmt in (("hit_rate", "prefix hit rate", _pct), ("evicted_blocks", "evicted blocks", "{:,}".format)):
                shown = ["-" if not pc.get(side) or pc[side].get(key) is None else fmt(pc[side][key]) for side in ("real", "sim")]
                rows.append([label, *shown, ""])
        lines += _table(["", "real", "simulated", "error"], rows)
    return "\n".join(lines).rstrip() + "\n"


def write_json(path: str | Path, report: Mapping) -> None:
    """Write ``report`` as indented JSON (NaN/inf become null)."""

    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (float, np.floating)):
            return _f(x)
        return x

    Path(path).write_text(json.dumps(clean(report), indent=1) + "\n", encoding="utf-8")


def plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_iterations(path: str | Path, predicted, measured, kinds, title: str) -> None:
    """Scatter of predicted vs measured iteration time (log-log), coloured by batch kind."""
    plt = _figure()
    pred = np.asarray(predicted, dtype=np.float64) * 1e3
    meas = np.asarray(measured, dtype=np.float64) * 1e3
    kinds = np.asarray(kinds)
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    colors = {"prefill_only": "tab:blue", "decode_only": "tab:orange", "mixed": "tab:green"}
    for kind in ITERATION_KINDS:
        m = kinds == kind
        if m.any():
            ax.scatter(meas[m], pred[m], s=8, alpha=0.6, color=colors[kind], label=f"{kind.replace('_', '-')} ({int(m.sum())})")
    ok = np.isfinite(pred) & np.isfinite(meas) & (pred > 0) & (meas > 0)
    if ok.any():
        lo = min(pred[ok].min(), meas[ok].min()) * 0.8
        hi = max(pred[ok].max(), meas[ok].max()) * 1.25
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax.plot([lo, hi], [lo * 1.1, hi * 1.1], color="grey", lw=0.6, ls="--")
        ax.plot([lo, hi], [lo / 1.1, hi / 1.1], color="grey", lw=0.6, ls="--")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured iteration time (ms)")
    ax.set_ylabel("predicted iteration time (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_cdfs(path: str | Path, real: RequestTimings, sim: RequestTimings, title: str, labels=("real", "simulated")) -> None:
    """CDF overlays of TTFT, TPOT and E2E: measured vs simulated, one panel each."""
    plt = _figure()
    fig, axes = plt.subplots(1, len(REQUEST_METRICS), figsize=(4 * len(REQUEST_METRICS), 3.6))
    for ax, name in zip(axes, REQUEST_METRICS):
        for data, label, style in ((real.metric(name), labels[0], "-"), (sim.metric(name), labels[1], "--")):
            if data is None:
                continue
            x = np.sort(data[np.isfinite(data)]) * 1e3
            if x.size:
                ax.plot(x, np.arange(1, x.size + 1) / x.size, style, label=label)
        ax.set_xlabel(f"{BY_NAME[name].label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
