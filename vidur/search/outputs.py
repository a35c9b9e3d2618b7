"""Search outputs: results table (CSV, Parquet), Pareto table and plots, best.yaml, text report."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidur.metrics import table
from vidur.search.cost import cheapest_fleets, eligible, pareto_front
from vidur.search.probe import probe_scenario, probe_size
from vidur.search.spec import latency_columns, op_column



def pretty_column(col: str) -> str:
    """``ttft_p99_s`` -> ``TTFT p99``."""
    base = col.removesuffix("_s")
    metric, _, q = base.rpartition("_p")
    known = table.by_name().get(metric)
    return f"{known.label if known else metric} p{q}" if metric else col


def op_label(spec) -> str:
    """Where the Pareto front's latencies are measured, e.g. ``at 90 % of max QPS``."""
    return f"at {spec.options.operating_point * 100:g} % of max QPS"


# ------------------------------------------------------------------ tables


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else _fmt(r.get(k))) for k in cols})


def _fmt(v):
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return v


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as Parquet (a float column where any value is a float)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(dict.fromkeys(k for r in rows for k in r))
    data = {c: [r.get(c) for r in rows] for c in cols}
    arrays = {}
    for c, vals in data.items():
        present = [v for v in vals if v is not None]
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present) and any(
            isinstance(v, float) for v in present
        ):
            vals = [None if v is None else float(v) for v in vals]
        arrays[c] = pa.array(vals)
    pq.write_table(pa.table(arrays), path)


def pareto_rows(spec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (latency metric, frontier configuration); latencies at the operating point."""
    ok = [r for r in rows if eligible(r)]
    out = []
    for col in latency_columns(spec):
        front = pareto_front([(r.get(op_column(col)), r.get("qps_per_dollar"), r) for r in ok])
        for rank, r in enumerate(front, 1):
            out.append({
                "metric": col, "rank": rank, "config": r["config"], "index": r["index"],
                "value_s": r[op_column(col)], "operating_point": spec.options.operating_point,
                "operating_qps": r["op_qps"], "qps_per_dollar": r["qps_per_dollar"], "max_qps": r["max_qps"],
                "gpus": r["gpus"], "cost_per_hour": r["cost_per_hour"],
            })
    return out


# ------------------------------------------------------------------ plots


def _style():
    """SciencePlots' style (without LaTeX) when installed, else matplotlib's default."""
    import contextlib
    import warnings

    import matplotlib.style

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its use of deprecated matplotlib helpers is not ours to fix
            import scienceplots  # noqa: F401 - registers the styles

        return matplotlib.style.context(["science", "no-latex", "grid"])
    except Exception:  # noqa: BLE001 - missing or broken: fall back silently
        return contextlib.nullcontext()


def plot_pareto(path: Path, col: str, rows: list[dict[str, Any]], best: dict | None,
                where: str = "at 90 % of max QPS") -> None:
    """Scatter of QPS per $/h vs ``col`` at the operating point (``where``) for every configuration
    meeting the SLOs (colour: device, marker: replica scheduler), frontier as a line."""
    label, col = col, op_column(col)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    pts = [r for r in rows if eligible(r) and r.get(col) is not None and r.get("qps_per_dollar") is not None]
    with _style():
        fig = Figure(figsize=(6.4, 4.4), dpi=150)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if not pts:
            ax.text(0.5, 0.5, "no configuration meets the SLOs", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(f"{pretty_column(label)} {where}")
        else:
            vmax = max(r[col] for r in pts)
            mult, unit = (1e3, "ms") if vmax < 1.0 else (1.0, "s")
            devices = list(dict.fromkeys(r["device"] for r in pts))
            scheds = list(dict.fromkeys(r["replica_scheduler"] for r in pts))
            colors = {d: f"C{i % 10}" for i, d in enumerate(devices)}
            markers = {s: "osD^vP*Xhp"[i % 10] for i, s in enumerate(scheds)}
            for r in pts:
                ax.scatter(r[col] * mult, r["qps_per_dollar"], s=28, c=colors[r["device"]],
                           marker=markers[r["replica_scheduler"]], alpha=0.8, linewidths=0.4, edgecolors="k")
            front = pareto_front([(r[col], r["qps_per_dollar"], r) for r in pts])
            fx = [r[col] * mult for r in front]
            fy = [r["qps_per_dollar"] for r in front]
            ax.plot(fx, fy, "k--", lw=1.0, drawstyle="steps-post", zorder=0)
            if best is not None and best.get(col) is not None:
                ax.scatter([best[col] * mult], [best["qps_per_dollar"]], s=160, marker="*", c="gold",
                           edgecolors="k", linewidths=0.6, zorder=5)
            lo, hi = min(r[col] for r in pts), vmax
            if lo > 0 and hi / lo > 30:
                ax.set_xscale("log")
            ax.set_xlabel(f"{pretty_column(label)} {where} ({unit})")
            handles = [Line2D([], [], ls="", marker="o", color=colors[d], label=d) for d in devices]
            handles += [Line2D([], [], ls="", marker=markers[s], color="0.4", label=s) for s in scheds]
            handles.append(Line2D([], [], ls="--", color="k", label="Pareto frontier"))
            if best is not None:
                handles.append(Line2D([], [], ls="", marker="*", color="gold", markeredgecolor="k", markersize=10,
                                      label=r"best (max QPS per \$)"))
            ax.legend(handles=handles, fontsize=7, loc="best", frameon=True)
        ax.set_ylabel(r"max QPS per \$/h  ((req/s) / (\$/h))")
        ax.set_title(f"Cost efficiency vs {pretty_column(label)}", fontsize=10)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)


# ------------------------------------------------------------------ report


def _s(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v * 1e3:.3g} ms"
    return f"{v:.3g} s"


def _slo_line(slos: dict[str, dict]) -> str:
    parts = []
    for col, v in slos.items():
        op = "<=" if v["met"] else ">"
        parts.append(f"{pretty_column(col)} {_s(v['value'])} {op} {_s(v['bound'])} {'ok' if v['met'] else 'FAIL'}")
    return "; ".join(parts)


def _table(headers: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)]


def format_report(spec, outcome, files: list[str], notes: list[str]) -> str:
    """The short text report."""
    rows, best, ev = outcome.rows, outcome.best, outcome.evidence
    L: list[str] = []
    L.append(f"vidur search: {spec.path or '(spec)'}")
    lengths = spec.workload.get("lengths") or {}
    lname = lengths.get("name", "lognormal") if isinstance(lengths, dict) else lengths
    if isinstance(lengths, dict) and lengths.get("path"):
        lname += f" ({Path(lengths['path']).name})"
    arrival = spec.workload["arrival"]["name"]
    size = (f"{spec.probe_duration:g} s of arrivals" if spec.probe_duration is not None
            else f"{spec.probe_requests:,} requests")
    o = spec.options
    coarse = f", coarse stage at {o.coarse_fraction:g}x size to {o.coarse_tolerance:.0%}" if o.coarse_fraction > 0 and o.coarse_tolerance > o.tolerance else ""
    L.append(f"model {spec.model} | lengths {lname} | {arrival} arrivals swept | seed {spec.seed}")
    L.append(f"probes: {size} each (at least {o.min_requests} requests), simulated time capped at arrivals + "
             f"{spec.drain_s:g} s; tolerance {o.tolerance:.0%}{coarse}")
    L.append("SLOs: " + "; ".join(s.label for s in spec.slos))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    nprobes = sum(r["probes"] for r in rows)
    L.append(f"grid: {len(rows)} configurations ({', '.join(f'{v} {k}' for k, v in counts.items())}); "
             f"this run simulated {outcome.ran}, reused {outcome.reused}; {nprobes} probes in all")
    L.append("")
    if best is None:
        L.append("best: no configuration meets the SLOs")
    else:
        L.append(f"best: {best['config']}")
        nxt = ""
        if best.get("next_failing_qps"):
            nxt = f" ({best['next_failing_qps']:.4g} failed: {best['failed_slos_above'] or '?'})"
        L.append(f"  max QPS {best['max_qps']:.4g}{nxt} | {best['gpus']} GPU{'s' if best['gpus'] != 1 else ''} x ${best['price_per_gpu_hour']:.4g}/h = "
                 f"${best['cost_per_hour']:.4g}/h | {best['qps_per_dollar']:.4g} QPS per $/h | "
                 f"${best['dollars_per_million_requests']:.3g} per million requests"
                 + (f", ${best['dollars_per_million_tokens']:.3g} per million tokens (input + output)"
                    if best.get("dollars_per_million_tokens") else ""))
        if best.get("max_qps_mean") is not None:
            hw = (f" ± {best['max_qps_ci_high'] - best['max_qps_mean']:.3g} (95 % CI)"
                  if best.get("max_qps_ci_high") is not None else " (one seed bracketed: no interval)")
            L.append(f"  max QPS over seeds {', '.join(map(str, spec.seeds))}: mean {best['max_qps_mean']:.4g}{hw}; "
                     f"the line above is seed {spec.seed}'s")
        if best.get("estimator"):
            src = f" from {best['estimator_source']}" if best.get("estimator_source") else ""
            L.append(f"  priced by the {best['estimator']} estimator{src}")
        if best.get("prefix_hit_rate") is not None:
            L.append(f"  prefix cache at max QPS: hit rate {best['prefix_hit_rate']:.1%}, "
                     f"{best['prefix_evicted_blocks']:,} blocks evicted")
        if ev is not None:
            a, b = ev["at_max"], ev["above"]
            L.append(f"  evidence (re-simulated, {a['requests']:,} and {b['requests']:,} requests):")
            L.append(f"    at {a['qps']:.4g} QPS: {_slo_line(a['slos'])} -> "
                     f"{'every SLO met' if a['met'] else 'NOT all SLOs met'}")
            L.append(f"    at {b['qps']:.4g} QPS ({ev['factor']:g}x): {_slo_line(b['slos'])} -> "
                     f"{'at least one SLO fails' if not b['met'] else 'all SLOs still met'}")
            if best.get("steady") is False:
                L.append(f"    not steady: {best['reason']}")
            else:
                L.append(f"    {'confirmed' if ev['confirmed'] else 'NOT confirmed'}: max QPS is within "
                         f"{(ev['factor'] - 1):.0%} of the SLO limit" if ev["confirmed"] else
                         "    NOT confirmed: see the lines above")
    L.append("")
    ok = sorted((r for r in rows if r["qps_per_dollar"] and r["slos_met"]), key=lambda r: -r["qps_per_dollar"])
    if ok:
        lat_cols = list(dict.fromkeys([s.column for s in spec.slos] + ["ttft_p99_s", "tpot_p99_s"]))
        headers = ["config", "max QPS", "GPUs", "$/h", "QPS per $/h", *(pretty_column(c) for c in lat_cols)]
        body = []
        for r in ok[:15]:
            body.append([r["config"], f"{r['max_qps']:.4g}", str(r["gpus"]), f"{r['cost_per_hour']:.4g}",
                         f"{r['qps_per_dollar']:.4g}", *(_s(r.get(c)) for c in lat_cols)])
        L.append(f"configurations meeting the SLOs, by QPS per dollar (top {len(body)} of {len(ok)}):")
        L.extend("  " + x for x in _table(headers, body))
        L.append("")
        L.append(f"Pareto frontier (max QPS per $/h vs latency {op_label(spec)}, measured by a probe at that "
                 "load; lower latency, more QPS per $):")
        prs = pareto_rows(spec, rows)
        for col in latency_columns(spec):
            pts = [p for p in prs if p["metric"] == col]
            L.append(f"  {pretty_column(col)}: " + " | ".join(
                f"{p['config']} ({_s(p['value_s'])} at {p['operating_qps']:.4g} QPS, {p['qps_per_dollar']:.3g})"
                for p in pts))
        L.append("")
    if spec.options.target_qps is not None:
        L.extend(_fleet_lines(spec.options.target_qps, rows, getattr(outcome, "fleet_check", None)))
    other = [r for r in rows if r["status"] not in ("ok",) or r.get("steady") is False]
    if other:
        L.append("not ranked / notes per configuration:")
        for r in other:
            status = "not steady" if r["status"] == "ok" else r["status"]
            L.append(f"  {status:<10} {r['config']}: {r['reason'] or '-'}")
        L.append("")
    for n in notes:
        L.append(f"note: {n}")
    L.append("files: " + ", ".join(files))
    return "\n".join(L) + "\n"


def _fleet_lines(target: float, rows: list[dict[str, Any]], check: dict | None = None) -> list[str]:
    """The "cheapest fleet for a target QPS" section (search.target_qps)."""
    fleets = cheapest_fleets(rows)
    if not fleets:
        return [f"cheapest fleet for {target:g} QPS: no configuration meets the SLOs", ""]
    headers = ["config", "replicas", "GPUs", "$/h", "per-replica max QPS", "$/M tokens"]
    body = [[r["config"], str(r["fleet_replicas"]), str(r["fleet_gpus"]), f"{r['fleet_cost_per_hour']:.4g}",
             f"{r['max_qps'] / r['replicas']:.4g}",
             f"{r['dollars_per_million_tokens']:.3g}" if r.get("dollars_per_million_tokens") else "-"]
            for r in fleets[:15]]
    L = [f"cheapest fleet for {target:g} QPS (replicas = ceil(target / per-replica max QPS); per-replica capacity "
         f"extrapolated linearly; top {len(body)} of {len(fleets)}):"]
    L.extend("  " + x for x in _table(headers, body))
    if check is not None:
        if check.get("error"):
            L.append(f"  checked: {check['config']} at {target:g} QPS could not run: {check['error']}")
        else:
            L.append(f"  checked: {check['config']} simulated at {target:g} QPS ({check['requests']:,} requests): "
                     f"{_slo_line(check['slos'])} -> "
                     f"{'every SLO met' if check['met'] else 'NOT all SLOs met: the extrapolation is optimistic here'}")
    L.append("")
    return L


def best_scenario_yaml(spec, cfg, max_qps: float) -> str:
    """The best configuration as a scenario YAML at its max QPS (same probe as the search)."""
    import yaml

    d, n = probe_size(spec.probe_duration, spec.probe_requests, 1.0, max_qps, spec.options.min_requests)
    cap = (d + spec.drain_s) if d is not None else None
    raw = probe_scenario(spec.base_scenario(cfg), max_qps, d, n, cap)
    raw["simulation"]["progress"] = True
    slos = {}
    for s in spec.slos:
        slos.setdefault(s.metric, {"quantile": s.quantile, "max_s": s.max_s})
    raw["metrics"] = {"slos": slos}
    head = (f"# best configuration of the search {spec.path or ''}: {cfg.label}\n"
            f"# at its maximum QPS {max_qps:.4g}; run it with `vidur run best.yaml`\n")
    if cap is None:
        head += "# (request-count probes: the search capped simulated time at the last arrival + drain)\n"
    return head + yaml.safe_dump(raw, sort_keys=False)


#: a tail quantile q is taken to need at least this many requests beyond it (10 for p99: 1,000 requests)
TAIL_SAMPLES = 10


def thin_tail_warning(spec, rows: list[dict[str, Any]]) -> str | None:
    """One line when a tail SLO at some configuration's max QPS rests on too few requests
    (fewer than ``TAIL_SAMPLES / (1 - q)``), saying the count and the fix; else None."""
    worst = None
    for s in spec.slos:
        if s.quantile >= 1:
            continue
        need = math.ceil(TAIL_SAMPLES / (1 - s.quantile) - 1e-9)
        for r in rows:
            n = r.get("probe_requests")
            if r["status"] in ("ok", "capped") and n and n < need and (worst is None or n / need < worst[0]):
                worst = (n / need, s, n, need, r["config"])
    if worst is None:
        return None
    _, s, n, need, cfg = worst
    return (f"{pretty_column(s.column)} rests on as few as {n:,} requests per probe ({cfg}); a p{s.quantile * 100:g} "
            f"needs about {need:,} (10 beyond it): lengthen the probes (workload.duration)")


def pricing_basis(row: dict[str, Any]) -> str | None:
    """How a searched configuration was priced, in a few words: ``profile`` (measured), ``roofline
    defaults``, ``roofline calibrated`` (on a profile or calibration file), or a plugin's name."""
    est = row.get("estimator")
    if not est:
        return None
    if est == "roofline":
        return "roofline calibrated" if row.get("estimator_source") else "roofline defaults"
    return str(est)


def mixed_pricing_warning(rows: list[dict[str, Any]]) -> str | None:
    """One line when the searched configurations were priced on different bases (a profile of one
    device or TP degree, the roofline's defaults for the others): their QPS then also differ by
    the estimators, not only by the hardware; else None."""
    groups: dict[str, set[str]] = {}
    for r in rows:
        basis = pricing_basis(r)
        if basis is None or r["status"] not in ("ok", "capped"):
            continue
        groups.setdefault(basis, set()).add(f"{r['device']} TP{r['tensor_parallel']}")
    if len(groups) < 2:
        return None
    parts = "; ".join(f"{b}: {', '.join(sorted(where))}" for b, where in sorted(groups.items()))
    return (f"configurations are priced on different bases ({parts}), so their QPS differ by estimator as well as by "
            f"hardware; set runtime_estimator (e.g. roofline) to compare like with like")


def write_outputs(spec, outcome, log: Callable[[str], None]) -> str:
    """Write every output file into ``outcome.out_dir``; returns the report text."""
    out: Path = outcome.out_dir
    rows = outcome.rows
    files = ["results.jsonl"]
    notes: list[str] = []
    write_csv(out / "results.csv", rows)
    files.append("results.csv")
    write_parquet(out / "results.parquet", rows)
    files.append("results.parquet")
    prs = pareto_rows(spec, rows)
    write_csv(out / "pareto.csv", prs or [{"metric": None, "rank": None, "config": None}])
    files.append("pareto.csv")
    try:
        import matplotlib  # noqa: F401

        have_mpl = True
    except ImportError:
        have_mpl = False
        msg = "matplotlib is not installed: no plots (pip install 'vidur-sim[search]')"
        log(f"warning: {msg}")
        notes.append(msg)
    if have_mpl:
        for col in latency_columns(spec):
            name = f"pareto_{col.removesuffix('_s')}.png"
            plot_pareto(out / name, col, rows, outcome.best, op_label(spec))
            files.append(name)
    if outcome.best is not None:
        cfg = spec.configs[outcome.best["index"]]
        (out / "best.yaml").write_text(best_scenario_yaml(spec, cfg, outcome.best["max_qps"]))
        files.append("best.yaml")
    if outcome.pending:
        notes.append(f"{outcome.pending} configuration(s) not searched yet; rerun the same command to continue")
    if outcome.errors:
        notes.append(f"{len(outcome.errors)} configuration(s) failed with an internal error (not stored; a rerun retries them)")
    unf = [r for r in rows if r.get("unfinished_at_cap")]
    if unf:
        notes.append(f"{len(unf)} configuration(s) had requests unfinished at the simulated-time cap at their max QPS "
                     "(counted as violating; raise search.drain_s to resolve them)")
    thin = thin_tail_warning(spec, rows)
    if thin:
        log(f"warning: {thin}")
        notes.append(thin)
    mixed = mixed_pricing_warning(rows)
    if mixed:
        log(f"warning: {mixed}")
        notes.append(mixed)
    if spec.probe_requests is not None:
        notes.append("probes are sized by request count: at high QPS they span less time and may not expose a "
                     "slow overload; prefer workload.duration")
    files.append("report.txt")
    text = format_report(spec, outcome, files, notes)
    (out / "report.txt").write_text(text)
    return text
