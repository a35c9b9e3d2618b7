"""Sweep outputs: tables (CSV, Parquet), the side-by-side report and the plots of scheduling papers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidur.metrics.headline import by_name, cdf_metrics, display_label, format_interval, format_value, headline_metrics
from vidur.search.outputs import _style, write_csv, write_parquet
from vidur.sweep.worker import CDF_PERCENTS


def _table_metrics():
    """The metric table's entries with a headline role (read when plotting)."""
    from vidur.metrics.table import METRICS

    return [m for m in METRICS if m.headline and m.unit == "s"]


def _title(name: str) -> str:
    from vidur.metrics.table import BY_NAME

    m = BY_NAME.get(name)
    return m.label if m is not None else name


def load_label(qps: float | None) -> str:
    return "scenario load" if qps is None else f"{qps:g} QPS"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()  # noqa: E731
    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def _diff_cell(p: dict[str, Any]) -> str:
    h = by_name()[p["metric"]]
    if p["diff"] is None:
        return "-"
    if p["relative"] is not None:
        txt = f"{100 * p['relative']:+.1f}%"
    else:
        sign = "+" if p["diff"] >= 0 else "-"
        txt = sign + format_value(h, abs(p["diff"]))
    if p["p_value"] is not None:
        txt += f" (p={p['p_value']:.2g})" + (" *" if p["significant"] else "  ")
    return txt


def format_report(spec, summary: list[dict], paired: list[dict], cells: list[dict], files: list[str],
                  notes: list[str]) -> str:
    """The text report: per workload and load, the side-by-side table and the paired differences."""
    policies = [p.label for p in spec.policies]
    by = {(r["workload"], r["qps"], r["policy"], r["metric"]): r for r in summary}
    pb = {(r["workload"], r["qps"], r["policy"], r["metric"]): r for r in paired}
    ok = [c for c in cells if c.get("status") == "ok"]
    lines = [
        f"vidur sweep: {len(policies)} policies x {len(spec.workloads)} workload(s) x {len(spec.loads)} load(s) "
        f"x {len(spec.seeds)} seed(s) = {len(cells)} simulations ({len(ok)} ran)",
        "every policy replays the same request stream per (workload, load, seed); mean ± 95 % CI half-width "
        "over seeds (Student t)",
        "",
    ]
    for w in spec.workloads:
        for q in sorted(spec.loads, key=lambda x: (x is None, x or 0.0)):
            present = [p for p in policies if any((w.label, q, p, h.name) in by for h in headline_metrics())]
            if not present:
                continue
            n = max(by[(w.label, q, p, h.name)]["seeds"] for p in present for h in headline_metrics() if (w.label, q, p, h.name) in by)
            lines.append(f"== workload {w.label}, {load_label(q)} ({n} seed{'s' if n != 1 else ''})")
            body = []
            for h in headline_metrics():
                cells_h = [by.get((w.label, q, p, h.name)) for p in present]
                if all(c is None for c in cells_h):
                    continue
                body.append([display_label(h)] + [format_interval(h, c["mean"], c["half_width"]) if c else "-"
                                                  for c in cells_h])
            lines += _table(["metric", *present], body)
            others = [p for p in present if p != spec.baseline]
            if spec.baseline in present and others:
                lines.append("")
                lines.append(f"   vs {spec.baseline} (paired over seeds: mean difference, relative to {spec.baseline}; "
                             "* significant at p < 0.05)")
                body = []
                for h in headline_metrics():
                    cs = [pb.get((w.label, q, p, h.name)) for p in others]
                    if all(c is None for c in cs):
                        continue
                    body.append([display_label(h)] + [_diff_cell(c) if c else "-" for c in cs])
                lines += _table(["metric", *others], body)
            lines.append("")
    skipped = [c for c in cells if c.get("status") == "skipped"]
    for c in skipped[:10]:
        notes.append(f"skipped {c['policy']} on {c['workload']} at {load_label(c['qps'])}, seed {c['seed']}: {c['reason']}")
    if len(skipped) > 10:
        notes.append(f"... and {len(skipped) - 10} more skipped cells (cells.csv has them all)")
    clipped = {(c["workload"], c["qps"], c["seed"]): (c["clipped"], c["requests"]) for c in ok if c.get("clipped")}
    if clipped:
        worst = max(v[0] / v[1] for v in clipped.values())
        notes.append(f"workload.lengths.max_tokens clipped requests in {len(clipped)} stream(s) (at most "
                     f"{100 * worst:.1f} % of one stream's requests)")
    unf = [c for c in ok if c.get("unfinished")]
    if unf:
        notes.append(f"{len(unf)} run(s) left requests unfinished (simulation.max_time); their latencies leave those out")
    ests = sorted({c.get("estimator", "") for c in ok} - {""})
    if ests:
        lines.append("estimator: " + "; ".join(ests))
    mixed = mixed_estimator_note(ok)
    if mixed:
        notes.append(mixed)
    for n_ in notes:
        lines.append(f"note: {n_}")
    lines.append("files: " + ", ".join(files))
    return "\n".join(lines) + "\n"


def mixed_estimator_note(cells: list[dict[str, Any]]) -> str | None:
    """One line when the policies of a sweep were priced by different estimators (under
    ``runtime_estimator: auto`` an engine model such as ``vllm_v1`` takes the roofline where a
    batching policy takes a profile): their differences then include the cost model; else None."""
    by_est: dict[str, set[str]] = {}
    for c in cells:
        if c.get("estimator"):
            by_est.setdefault(c["estimator"], set()).add(str(c["policy"]))
    if len(by_est) < 2:
        return None

    def short(desc: str) -> str:
        name = desc.split(" (")[0]
        return f"{name} calibrated" if "calibrated on" in desc else name

    parts = "; ".join(f"{short(e)}: {', '.join(sorted(p))}" for e, p in sorted(by_est.items()))
    return (f"policies were priced by different estimators ({parts}), so their differences include the cost model; "
            f"set runtime_estimator (e.g. roofline) to compare them on one")


# ------------------------------------------------------------------ plots


def _loads(spec) -> list[float]:
    return sorted(q for q in spec.loads if q is not None)


def plot_latency_vs_load(path: Path, spec, summary: list[dict], workload: str) -> None:
    """TTFT/TPOT/E2E (p50 top, p99 bottom) against load, one line per policy with 95 % CI bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by = {(r["qps"], r["policy"], r["metric"]): r for r in summary if r["workload"] == workload}
    with _style():
        metrics = _table_metrics()
        quantiles = sorted({q for m in metrics for q in m.headline})
        fig = Figure(figsize=(3.7 * max(1, len(metrics)), 3.25 * max(1, len(quantiles))))
        FigureCanvasAgg(fig)
        axes = fig.subplots(max(1, len(quantiles)), max(1, len(metrics)), squeeze=False)
        for j, m in enumerate(metrics):
            for i, qf in enumerate(quantiles):
                ax = axes[i][j]
                if qf not in m.headline:
                    ax.set_visible(False)
                    continue
                q = f"p{qf * 100:g}"
                name = f"{m.name}_{q}_s"
                for pol in spec.policies:
                    pts = [(x, by[(x, pol.label, name)]) for x in _loads(spec) if (x, pol.label, name) in by]
                    if not pts:
                        continue
                    xs = [x for x, _ in pts]
                    ys = [r["mean"] * 1e3 for _, r in pts]
                    err = [(r["half_width"] or 0.0) * 1e3 for _, r in pts]
                    ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=pol.label)
                ax.set_title(f"{m.label} {q}")
                ax.set_xlabel("load (QPS)")
                ax.set_ylabel("ms")
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=min(6, len(labels)),
                       frameon=False, fontsize=8)
        fig.suptitle(f"latency against load, {workload} (mean over seeds, 95 % CI)", y=0.995, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
        fig.savefig(path, dpi=130)


def plot_goodput_vs_load(path: Path, spec, summary: list[dict], workload: str) -> None:
    """Goodput and throughput against load, one line per policy with 95 % CI bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by = {(r["qps"], r["policy"], r["metric"]): r for r in summary if r["workload"] == workload}
    with _style():
        fig = Figure(figsize=(9, 3.8))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2, squeeze=False)[0]
        for ax, name in zip(axes, ("goodput_rps", "throughput_rps")):
            for pol in spec.policies:
                pts = [(x, by[(x, pol.label, name)]) for x in _loads(spec) if (x, pol.label, name) in by]
                if pts:
                    ax.errorbar([x for x, _ in pts], [r["mean"] for _, r in pts],
                                yerr=[r["half_width"] or 0.0 for _, r in pts], marker="o", ms=3, capsize=2,
                                label=pol.label)
            lo, hi = (min(_loads(spec)), max(_loads(spec))) if _loads(spec) else (0, 1)
            ax.plot([lo, hi], [lo, hi], ls=":", color="grey", lw=0.8, label="offered load")
            ax.set_title(by_name()[name].label + (" (requests meeting every SLO)" if name == "goodput_rps" else ""))
            ax.set_xlabel("load (QPS)")
            ax.set_ylabel("requests / s")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"goodput against load, {workload}", y=0.995, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        fig.savefig(path, dpi=130)


def plot_cdfs(path: Path, spec, cells: list[dict], workload: str, qps: float | None) -> None:
    """Overlaid CDFs of TTFT, TPOT and E2E per policy at one load: each policy's quantile
    function averaged over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    with _style():
        fig = Figure(figsize=(11, 3.6))
        FigureCanvasAgg(fig)
        names = cdf_metrics()
        axes = fig.subplots(1, max(1, len(names)), squeeze=False)[0]
        ys = np.asarray(CDF_PERCENTS, dtype=float) / 100.0
        for ax, metric in zip(axes, names):
            for pol in spec.policies:
                qs = [c["cdf"][metric] for c in cells
                      if c.get("status") == "ok" and c["policy"] == pol.label and c["workload"] == workload
                      and c["qps"] == qps and len(c["cdf"].get(metric) or []) == len(ys)]
                if qs:
                    ax.plot(np.mean(np.asarray(qs), axis=0) * 1e3, ys, label=pol.label, lw=1.2)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(_title(metric))
            ax.set_xlabel("ms (log)")
            ax.set_ylabel("CDF")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"CDFs at {load_label(qps)}, {workload} (quantiles averaged over seeds)", y=0.995, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.92))
        fig.savefig(path, dpi=130)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def cell_table(cells: Sequence[dict]) -> list[dict[str, Any]]:
    """``cells.csv``: one row per simulation, the headline metrics as columns."""
    out = []
    for c in sorted(cells, key=lambda c: c["index"]):
        row = {k: c.get(k) for k in ("policy", "workload", "qps", "seed", "status", "reason")}
        row.update({h.name: (c.get("metrics") or {}).get(h.name) for h in headline_metrics()})
        row.update({k: c.get(k) for k in ("requests", "unfinished", "clipped", "estimator", "stream", "wall_s", "key")})
        out.append(row)
    return out


def write_outputs(spec, out: Path, cells: list[dict], summary: list[dict], paired: list[dict], *,
                  plots: bool = True, log: Callable[[str], None] = print) -> str:
    """Write every output of a sweep into ``out``; returns the report text."""
    files = ["cells.jsonl"]
    notes: list[str] = []
    tables = {"cells": cell_table(cells), "summary": summary, "paired": paired}
    for name, rows in tables.items():
        write_csv(out / f"{name}.csv", rows or [{"policy": None}])
        files.append(f"{name}.csv")
    for name, rows in tables.items():
        if rows:
            write_parquet(out / f"{name}.parquet", rows)
            files.append(f"{name}.parquet")
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            msg = "matplotlib is not installed: no plots (pip install 'vidur-sim[plot]')"
            log(f"warning: {msg}")
            notes.append(msg)
        else:
            for w in spec.workloads:
                suffix = "" if len(spec.workloads) == 1 else f"_{_slug(w.label)}"
                if len(_loads(spec)) > 1:
                    name = f"latency_vs_load{suffix}.png"
                    plot_latency_vs_load(out / name, spec, summary, w.label)
                    name2 = f"goodput_vs_load{suffix}.png"
                    plot_goodput_vs_load(out / name2, spec, summary, w.label)
                    files += [name, name2]
                for q in spec.loads:
                    name = f"cdf{suffix}_{'scenario' if q is None else f'{q:g}qps'}.png"
                    plot_cdfs(out / name, spec, cells, w.label, q)
                    files.append(name)
    files.append("report.txt")
    text = format_report(spec, summary, paired, cells, files, notes)
    (out / "report.txt").write_text(text)
    return text
