"""A compact plain-text table of a run summary for the terminal (no dependencies)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vidur.metrics import table

_COLS = ("p50", "p90", "p99", "mean", "max")


def _ms(x: Any) -> str:
    if x is None:
        return "-"
    v = float(x) * 1e3
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 0.01:
        return f"{v:.2f}"
    return f"{v:.2g}"


def _num(x: Any, fmt: str = ",.2f") -> str:
    return "-" if x is None else format(float(x), fmt)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100.0 * float(x):.1f}%"


def _secs(x: Any) -> str:
    if x is None:
        return "-"
    x = float(x)
    return f"{x * 1e3:.3g} ms" if abs(x) < 1 else f"{x:.4g} s"


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Align columns: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r):
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        return "  ".join(cells).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return lines


def format_summary_table(summary: Mapping) -> str:
    """Render :func:`vidur.metrics.summary.summarize`'s dict as an aligned text table.

    Latencies in milliseconds (p50/p90/p99/mean/max), then throughput,
    goodput, SLO checks and one line per replica.
    """
    lines: list[str] = []
    req = summary.get("requests", {})
    win = summary.get("window", {})
    head = f"requests {req.get('completed', 0):,}/{req.get('total', 0):,} completed"
    if req.get("unfinished"):
        head += f" ({req['unfinished']:,} unfinished)"
    if win.get("duration") is not None:
        head += f" | window {win['duration']:,.2f} s simulated"
    if summary.get("wall_seconds"):
        head += f" | wall {summary['wall_seconds']:,.2f} s"
    lines.append(head)
    lines.append("")

    lat = summary.get("latency", {})
    rows = []
    for key, label in [(m.name, m.label) for m in table.METRICS if m.unit == "s"]:
        st = lat.get(key)
        if not st:
            continue
        rows.append([label] + [_ms(st.get(c)) for c in _COLS] + [f"{st.get('count', 0):,}"])
    lines += _table(["latency (ms)", *_COLS, "n"], rows)
    lines.append("")
    other = summary.get("request_metrics") or {}
    rows = [
        [label] + [_num(other[key].get(c), ",.3g") for c in _COLS] + [f"{other[key].get('count', 0):,}"]
        for key, label in [(m.name, f"{m.label} ({m.unit})") for m in table.METRICS if m.unit != "s"]
        if other.get(key)
    ]
    if rows:
        lines += _table(["per request", *_COLS, "n"], rows)
        lines.append("")

    thr = summary.get("throughput", {})
    lines.append(
        "throughput  "
        f"{_num(thr.get('requests_per_s'))} req/s | "
        f"{_num(thr.get('output_tokens_per_s'), ',.0f')} output tok/s | "
        f"{_num(thr.get('total_tokens_per_s'), ',.0f')} total tok/s"
    )
    tok = summary.get("tokens", {})
    pre = summary.get("preemptions", {})
    lines.append(
        "tokens      "
        f"prefill {tok.get('prefill_tokens', 0):,} | decode {tok.get('decode_tokens', 0):,} | "
        f"preemptions {pre.get('total', 0):,} ({pre.get('requests_preempted', 0):,} requests, "
        f"{pre.get('recomputed_tokens', 0):,} tokens recomputed)"
    )
    bl = (summary.get("run") or {}).get("batch_log")
    if bl:
        lines.append(f"batch log   {bl['mode']} ({bl['why']})")
    gp = summary.get("goodput")
    if gp:
        lines.append(
            "goodput     "
            f"{_num(gp.get('requests_per_s'))} req/s | "
            f"{_pct(gp.get('fraction'))} of requests meet every per-request SLO"
        )
    slo = summary.get("slo")
    if slo:
        parts = []
        for name, r in slo.items():
            q = float(r["quantile"]) * 100
            mark = "ok" if r.get("met") else "MISSED"
            parts.append(f"{name} p{q:g} {_secs(r.get('value'))} <= {_secs(r.get('bound'))} {mark}")
        lines.append("SLO         " + " | ".join(parts))
    pc = summary.get("prefix_cache")
    if pc:
        c = pc["cluster"]
        lines.append(
            "prefix     "
            f" hit rate {_pct(c.get('hit_rate'))} ({c.get('hit_tokens', 0):,} of {c.get('query_tokens', 0):,} "
            f"prompt tokens cached) | {c.get('evicted_blocks', 0):,} blocks evicted"
        )

    reps = summary.get("replicas") or []
    if reps:
        lines.append("")
        rows = []
        for r in reps:
            bs = r.get("batch_size", {})
            tb = r.get("tokens_per_batch", {})
            kv = r.get("kv_utilization", {})
            dev = r.get("device", "?")
            par = f"{r['tp']}x{r['pp']}" if "tp" in r else "-"
            rows.append(
                [
                    str(r.get("replica")),
                    f"{dev} {par}",
                    f"{r.get('num_batches', 0):,}",
                    _num(bs.get("mean"), ".1f"),
                    _num(bs.get("p99"), ".0f"),
                    _num(tb.get("mean"), ",.0f"),
                    _pct(r.get("busy_fraction")),
                    f"{_pct(kv.get('mean'))}/{_pct(kv.get('max'))}",
                    _pct(r.get("mfu")),
                    _pct(r.get("mbu")),
                    f"{r.get('preemptions', 0):,}",
                ]
                + ([_pct(r["prefix_cache"].get("hit_rate")), f"{r['prefix_cache'].get('evicted_blocks', 0):,}"]
                   if pc else [])
            )
        lines += _table(
            ["replica", "device TPxPP", "batches", "bs mean", "bs p99", "tok/batch", "busy",
             "KV mean/max", "MFU", "MBU", "preempt"] + (["hit rate", "evicted"] if pc else []),
            rows,
            left=2,
        )
    return "\n".join(lines)
