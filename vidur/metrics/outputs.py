"""The run directory: resolved scenario, summary, tables, Chrome trace, plots.

Layout of ``out_dir`` (everything is written into a hidden sibling directory
first and renamed into place at the end, so a failed run leaves nothing
half-written)::

    scenario.yaml     the resolved scenario, as given
    summary.json      summarize()'s dict
    requests.parquet  one row per request: raw columns + ttft, tpot, e2e,
                      normalized_e2e, scheduling_delay (seconds; NaN = undefined)
    batches.parquet   one row per batch: index, raw columns, num_tokens, duration
                      (metrics.batch_log: full; in summary mode instead:)
    batch_timeseries.parquet  per replica and time bucket: busy fraction, batches,
                      mean batch size, tokens, tokens/s, mean and max KV blocks
    batch_histograms.parquet  per replica: exact histograms of batch size and tokens per batch

Tables are ``.csv`` instead with ``metrics.table_format: csv``
(:mod:`vidur.metrics.tablefile`; :func:`~vidur.metrics.tablefile.read_run_table`
reads either).
    trace.json        (chrome_trace) Trace Event Format for chrome://tracing / Perfetto
    plots/*.png       (plots, needs matplotlib) CDFs, batch size and KV use over time

Times in CSV files are seconds with up to 9 decimals (nanoseconds),
trailing zeros dropped.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vidur.errors import VidurError
from vidur.metrics._textfmt import Num, Text, format_rows
from vidur.metrics.tablefile import TABLE_FORMATS, write_table
from vidur.metrics.records import BATCH_COLUMNS, REQUEST_COLUMNS, RunRecords
from vidur.metrics.summary import request_metrics, weighted_percentile
from vidur.metrics import table
from vidur.metrics.table import METRICS, PER_REQUEST_METRICS

#: Default cap on the number of events in trace.json.
TRACE_MAX_EVENTS = 200_000
#: Columns derived from the raw request columns, appended to requests.csv
#: (the per-request metrics of the metric table; a run adds those its columns allow).
DERIVED_REQUEST_COLUMNS = PER_REQUEST_METRICS
#: Plot files written into ``plots/`` when matplotlib is importable.
PLOT_FILES = (
    *(f"cdf_{m.name}.png" for m in METRICS if m.plot),
    "batch_size.png",
    "kv_utilization.png",
)


# ---------------------------------------------------------------- JSON


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if x is None or isinstance(x, str):
        return x
    return str(x)


def write_summary_json(path: str | os.PathLike, summary: Mapping) -> None:
    """Write ``summary`` as strict JSON (NaN/inf become null, numpy types become Python)."""
    text = json.dumps(_jsonable(summary), indent=2, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


# ---------------------------------------------------------------- tables


def write_requests_table(path: str | os.PathLike, records: RunRecords) -> None:
    """One row per request: the raw columns (plus any extra the engine added), then the
    derived metrics; Parquet or CSV by the path's suffix."""
    req = records.requests
    n = len(req["arrival"])
    names = [c for c in REQUEST_COLUMNS if c in req] + [c for c in req if c not in REQUEST_COLUMNS]
    m = request_metrics(records)
    cols = [(c, req[c]) for c in names] + [(mt.name, m[mt.name]) for mt in table.METRICS if mt.name in m]
    write_table(path, cols, n)


def write_batches_table(path: str | os.PathLike, records: RunRecords) -> None:
    """One row per batch: index ``batch``, the raw columns (plus extras), ``num_tokens`` and
    ``duration``; Parquet or CSV by the path's suffix."""
    b = records.batches
    n = len(b["start"]) if "start" in b else 0
    names = [c for c in BATCH_COLUMNS if c in b] + [c for c in b if c not in BATCH_COLUMNS]
    cols = [("batch", np.arange(n, dtype=np.int64))] + [(c, b[c]) for c in names]
    if "prefill_tokens" in b and "num_decode" in b:
        cols.append(("num_tokens", np.asarray(b["prefill_tokens"], np.int64) + np.asarray(b["num_decode"], np.int64)))
    if "start" in b and "end" in b:
        cols.append(("duration", np.asarray(b["end"], np.float64) - np.asarray(b["start"], np.float64)))
    write_table(path, cols, n)


def timeseries_columns(records: RunRecords) -> list[tuple[str, np.ndarray]]:
    """The summarised log's per-replica time series as table columns (summary mode).

    Buckets of ``width`` seconds from ``t_start``; ``busy_fraction`` = batch time
    in the bucket / width; the other columns count the batches that started in
    the bucket: ``batches``, ``mean_batch_size``, ``prefill_tokens``,
    ``decode_tokens``, ``tokens_per_s`` (their sum / width), ``mean_kv_blocks``
    (per batch) and ``max_kv_blocks``. Undefined means (no batch) are empty."""
    ts = records.batch_summary.series
    c = ts.columns(len(records.replicas) or None)
    w = ts.width_s()
    n = len(c["replica"])
    batches = c["batches"]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_batch = lambda x: np.where(batches > 0, x / batches, np.nan)  # noqa: E731
        return [
            ("replica", c["replica"]),
            ("t_start", c["t_start"]),
            ("width", np.full(n, w)),
            ("busy_fraction", c["busy_ns"] / (w * 1e9)),
            ("batches", batches),
            ("mean_batch_size", per_batch(c["seqs"])),
            ("prefill_tokens", c["prefill_tokens"]),
            ("decode_tokens", c["decode_tokens"]),
            ("tokens_per_s", (c["prefill_tokens"] + c["decode_tokens"]) / w),
            ("mean_kv_blocks", per_batch(c["kv_sum"])),
            ("max_kv_blocks", c["kv_max"]),
        ]


#: the old names (the format follows the path's suffix)
write_requests_csv = write_requests_table
write_batches_csv = write_batches_table


def write_batch_summary_tables(out_dir: str | os.PathLike, records: RunRecords, suffix: str = ".parquet") -> None:
    """Summary mode: ``batch_timeseries`` and ``batch_histograms`` instead of ``batches``."""
    out = Path(out_dir)
    cols = timeseries_columns(records)
    write_table(out / f"batch_timeseries{suffix}", cols, len(cols[0][1]))
    h = records.batch_summary.histogram_columns()
    write_table(out / f"batch_histograms{suffix}", list(h.items()), len(h["replica"]))


# ---------------------------------------------------------------- Chrome trace


def _batch_kind(b: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    npf = np.asarray(b.get("num_prefill", np.zeros(n)), np.int64)
    ndc = np.asarray(b.get("num_decode", np.zeros(n)), np.int64)
    kind = np.full(n, b"mixed", dtype="S7")
    kind[(npf > 0) & (ndc == 0)] = b"prefill"
    kind[(npf == 0) & (ndc > 0)] = b"decode"
    kind[(npf == 0) & (ndc == 0)] = b"empty"
    return kind


def write_chrome_trace(
    path: str | os.PathLike, records: RunRecords, *, max_events: int = TRACE_MAX_EVENTS
) -> dict[str, Any]:
    """Write a Trace Event Format file (JSON object form) for chrome://tracing and Perfetto.

    One process per replica, one thread per pipeline stage, a complete event
    ("X", ts/dur in microseconds) per batch (per stage span when the records
    carry ``stage_spans``) with the batch's sizes as args, and a counter
    track of KV blocks in use when the budget allows. At most ``max_events``
    events (the earliest ones) are written; ``otherData`` says when the trace
    was cut. With pp > 1 and no stage spans, batch i goes on lane i mod pp.
    Process ids are replica + 1 and thread ids stage + 1 (Perfetto treats
    pid/tid 0 as the kernel's idle task); names carry the real numbers.
    Returns ``{"events": written, "total": available, "truncated": bool}``.
    """
    b = records.batches
    n = len(b["start"]) if "start" in b else 0
    infos = {int(r.replica): r for r in records.replicas}
    spans = records.stage_spans
    use_spans = spans is not None and len(spans.get("start", ())) > 0
    if use_spans:
        rows = np.asarray(spans["batch"], np.int64)
        ev_pid = np.asarray(spans["replica"], np.int64)
        ev_tid = np.asarray(spans["stage"], np.int64)
        ev_start = np.asarray(spans["start"], np.float64)
        ev_end = np.asarray(spans["end"], np.float64)
    else:
        rows = np.arange(n, dtype=np.int64)
        ev_pid = np.asarray(b["replica"], np.int64) if n else np.empty(0, np.int64)
        ev_start = np.asarray(b["start"], np.float64) if n else np.empty(0)
        ev_end = np.asarray(b["end"], np.float64) if n else np.empty(0)
        pp_of = np.array([infos[r].pp if r in infos else 1 for r in range(int(ev_pid.max()) + 1)]) if n else np.ones(1, np.int64)
        ev_tid = np.zeros(n, np.int64)
        if n and (pp_of > 1).any():
            # lanes per replica: the k-th batch of a replica goes on lane k mod pp
            order = np.argsort(ev_pid, kind="stable")
            sorted_pid = ev_pid[order]
            first = np.searchsorted(sorted_pid, sorted_pid, side="left")
            rank = np.empty(n, np.int64)
            rank[order] = np.arange(n) - first
            ev_tid = rank % pp_of[ev_pid]
    total = len(rows)
    keep = total
    truncated = False
    if total > max_events:
        order = np.argsort(ev_start, kind="stable")[:max_events]
        order.sort()
        rows, ev_pid, ev_tid, ev_start, ev_end = (a[order] for a in (rows, ev_pid, ev_tid, ev_start, ev_end))
        keep = max_events
        truncated = True
    # KV counter track: one sample per kept batch if it fits the budget
    with_counters = (
        not truncated and n > 0 and "kv_blocks_used" in b and keep + n <= max_events
    )

    pids = sorted(set(infos) | set(np.unique(ev_pid).tolist()))
    meta: list[dict] = []
    for pid in pids:
        info = infos.get(pid)
        label = f"replica {pid}"
        if info is not None:
            label += f" ({info.device}, TP{info.tp} PP{info.pp})"
        meta.append({"name": "process_name", "ph": "M", "pid": pid + 1, "args": {"name": label}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": pid + 1, "args": {"sort_index": pid}})
        stages = info.pp if info is not None else 1
        lane = "stage" if (use_spans or stages == 1) else "lane"
        for s in range(max(stages, 1)):
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": pid + 1, "tid": s + 1, "args": {"name": f"{lane} {s}"}}
            )
    other = {
        "generator": "vidur",
        "time_unit": "ts/dur in microseconds of simulated time",
        "batch_events": int(keep),
        "batch_events_total": int(total),
        "truncated": truncated,
    }
    if truncated:
        other["note"] = (
            f"trace cut to the earliest {keep} of {total} batch events; "
            "raise the event cap to see all"
        )
    elif not with_counters and n and "kv_blocks_used" in b:
        other["note"] = "KV counter track left out to stay under the event cap"

    head = {"displayTimeUnit": "ms", "otherData": other}
    head_text = json.dumps(head)[:-1]  # drop the closing brace
    meta_text = ",\n".join(json.dumps(e, separators=(",", ":")) for e in meta)

    with open(path, "wb") as f:
        f.write((head_text + ',"traceEvents":[\n' + meta_text).encode())
        need_comma = bool(meta)
        if keep:
            kind = _batch_kind(b, n)[rows]
            parts: list = [
                b',\n{"name":"',
                Text(kind),
                b'","cat":"batch","ph":"X","pid":',
                Num(ev_pid + 1),
                b',"tid":',
                Num(ev_tid + 1),
                b',"ts":',
                Num(ev_start * 1e6, decimals=3),
                b',"dur":',
                Num(np.maximum(ev_end - ev_start, 0.0) * 1e6, decimals=3),
                b',"args":{"batch":',
                Num(rows),
            ]
            for c in ("num_seqs", "num_prefill", "prefill_tokens", "num_decode", "decode_kv", "kv_blocks_used"):
                if c in b:
                    parts += [f',"{c}":'.encode(), Num(np.asarray(b[c])[rows])]
            parts.append(b"}}")
            first = True
            for chunk in format_rows(parts, keep):
                if first and not need_comma:
                    chunk = chunk[2:]
                first = False
                f.write(chunk)
            need_comma = True
        if with_counters:
            parts = [
                b',\n{"name":"kv_blocks_used","ph":"C","pid":',
                Num(np.asarray(b["replica"], np.int64) + 1),
                b',"ts":',
                Num(np.asarray(b["start"], np.float64) * 1e6, decimals=3),
                b',"args":{"blocks":',
                Num(np.asarray(b["kv_blocks_used"], np.int64)),
                b"}}",
            ]
            first = True
            for chunk in format_rows(parts, n):
                if first and not need_comma:
                    chunk = chunk[2:]
                first = False
                f.write(chunk)
        f.write(b"\n]}\n")
    events = keep + (n if with_counters else 0)
    return {"events": int(events), "total": int(total), "truncated": truncated}


# ---------------------------------------------------------------- plots


def plots_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _new_figure(figsize=(6.4, 4.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _scale(x_p99: float) -> tuple[float, str]:
    return (1e3, "ms") if x_p99 < 1.0 else (1.0, "s")


def _cdf_plot(path: Path, title: str, label: str, qs: np.ndarray, xs: np.ndarray, count: int) -> None:
    fig = _new_figure()
    ax = fig.add_subplot()
    if count:
        mult, unit = _scale(float(np.interp(0.99, qs, xs)))
        ax.plot(xs * mult, qs, lw=1.5)
        ax.set_xlabel(f"{label} ({unit})")
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(label)
    ax.set_ylabel("fraction of samples (CDF)")
    ax.set_ylim(0, 1.0)
    ax.set_title(f"{title} (n={count:,})")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _binned(t: np.ndarray, y: np.ndarray, w: np.ndarray, t0: float, t1: float, bins: int):
    if t1 <= t0:
        t1 = t0 + 1.0
    idx = np.clip(((t - t0) / (t1 - t0) * bins).astype(np.int64), 0, bins - 1)
    wsum = np.bincount(idx, weights=w, minlength=bins)
    ysum = np.bincount(idx, weights=y * w, minlength=bins)
    centers = t0 + (np.arange(bins) + 0.5) * (t1 - t0) / bins
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = ysum / wsum
    ok = wsum > 0
    return centers[ok], mean[ok]


def _time_plot(path: Path, records: RunRecords, ylabel: str, title: str, value_fn, bins: int = 600) -> None:
    folded = records.batch_summary
    if folded is not None:  # summary mode: the time series' buckets, weighted by their batches
        c = dict(timeseries_columns(records))
        keep = c["batches"] > 0
        n = int(keep.sum())
        b = {"num_seqs": c["mean_batch_size"][keep], "kv_blocks_used": c["mean_kv_blocks"][keep]}
        start = c["t_start"][keep]
        end = start + c["width"][keep]
        w = c["batches"][keep].astype(np.float64)
        title = title.replace("duration-weighted mean", f"mean over the batches of {folded.series.width_s():g}-s buckets, binned")
    else:
        b = records.batches
        n = len(b["start"]) if "start" in b else 0
        if n:
            start = np.asarray(b["start"], np.float64)
            end = np.asarray(b["end"], np.float64)
            w = np.maximum(end - start, 0.0)
            if not w.any():
                w = np.ones(n)
    fig = _new_figure((8.0, 4.0))
    ax = fig.add_subplot()
    if n:
        rep = np.asarray(c["replica"][keep] if folded is not None else b["replica"], np.int64)
        t0, t1 = float(start.min()), float(end.max())
        y = value_fn(b, rep)
        reps = np.unique(rep)
        if len(reps) <= 8:
            for r in reps:
                m = rep == r
                x, yy = _binned(start[m], y[m], w[m], t0, t1, bins)
                ax.plot(x, yy, lw=1.0, label=f"replica {r}")
            if len(reps) > 1:
                ax.legend(fontsize="small")
        else:
            x, yy = _binned(start, y, w, t0, t1, bins)
            ax.plot(x, yy, lw=1.0, label=f"mean over {len(reps)} replicas")
            ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no batches", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def write_plots(plot_dir: str | os.PathLike, records: RunRecords) -> list[str]:
    """Write the PNGs in :data:`PLOT_FILES` into ``plot_dir`` (needs matplotlib); return their names."""
    d = Path(plot_dir)
    d.mkdir(parents=True, exist_ok=True)
    m = request_metrics(records)
    qs = np.linspace(0.0, 1.0, 501)
    for metric in table.METRICS:
        if not metric.plot:
            continue
        if metric.per_request:
            x = m[metric.name]
            x = x[np.isfinite(x)]
            cnt = int(x.size)
            xs = np.quantile(x, qs) if x.size else qs * 0
        else:  # ITL: weighted samples
            iv = np.asarray(records.itl_values, np.float64)
            ic = np.asarray(records.itl_counts)
            cnt = int(ic[ic > 0].sum()) if ic.size else 0
            xs = np.asarray(weighted_percentile(iv, ic, qs * 100.0)) if cnt else qs * 0
        _cdf_plot(d / f"cdf_{metric.name}.png", metric.title, metric.label, qs, xs, cnt)

    _time_plot(
        d / "batch_size.png",
        records,
        "batch size (requests)",
        "Batch size over time (duration-weighted mean per bin)",
        lambda b, rep: np.asarray(b["num_seqs"], np.float64),
    )
    kv = {int(r.replica): r.kv_blocks for r in records.replicas}

    def kv_util(b, rep):
        cap = np.array([kv.get(int(r), 0) for r in range(int(rep.max()) + 1)], np.float64)
        cap = np.where(cap > 0, cap, np.nan)
        return 100.0 * np.asarray(b["kv_blocks_used"], np.float64) / cap[rep]

    if records.batch_summary is not None or "kv_blocks_used" in records.batches:
        _time_plot(
            d / "kv_utilization.png",
            records,
            "KV-cache blocks in use (%)",
            "KV-cache utilisation over time (duration-weighted mean per bin)",
            kv_util,
        )
    return sorted(p.name for p in d.glob("*.png"))


# ---------------------------------------------------------------- run dir


def write_run_dir(
    out_dir: str | os.PathLike,
    scenario_yaml_text: str,
    summary: Mapping,
    records: RunRecords,
    *,
    chrome_trace: bool,
    plots: bool,
    tables: bool = True,
    overwrite: bool = False,
    trace_max_events: int = TRACE_MAX_EVENTS,
    table_format: str = "parquet",
) -> Path:
    """Write the run directory atomically and return its path.

    Files go into a hidden temporary sibling of ``out_dir`` and are moved
    into place once everything is written; on any error it is removed and
    ``out_dir`` is untouched. Other files already in ``out_dir`` are left
    alone; the files of an earlier run there are refused with
    :class:`VidurError` unless ``overwrite`` is true (they are then
    replaced). Plots are skipped with a warning when matplotlib is missing.
    Tables are Parquet (``table_format="parquet"``) or CSV (``"csv"``).
    (:class:`RunDirWriter` writes the same directory, its tables while the caller summarises.)
    """
    writer = RunDirWriter(out_dir, records, tables=tables, overwrite=overwrite, table_format=table_format,
                          background=False)
    return writer.finish(scenario_yaml_text, summary, chrome_trace=chrome_trace, plots=plots,
                         trace_max_events=trace_max_events)


class RunDirWriter:
    """A run directory being written, as :func:`write_run_dir` writes it, in two steps.

    Built once the run's records are complete: it checks ``out_dir`` (the same
    refusals), makes the hidden temporary sibling and writes the tables into it,
    in a background thread with ``background=True`` (pyarrow's Parquet writer
    releases the GIL: the tables are written while the caller computes the
    summary, on another core). :meth:`finish` then writes the scenario, the
    summary, the Chrome trace and plots, waits for the tables (an error they met
    is raised here) and moves everything into place; :meth:`abort` (or an error
    in :meth:`finish`) waits for the tables and removes the temporary directory.
    The records are only read, by both threads.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        records: RunRecords,
        *,
        tables: bool = True,
        overwrite: bool = False,
        table_format: str = "parquet",
        background: bool = True,
    ):
        if table_format not in TABLE_FORMATS:
            raise VidurError(f"table format must be one of {', '.join(TABLE_FORMATS)}, got {table_format!r}")
        self.suffix = TABLE_FORMATS[table_format]
        self.out = out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise VidurError(f"output path {out} exists and is not a directory")
        self.previous = previous = run_files_in(out)
        if previous and not overwrite:
            raise VidurError(
                f"{out} already holds a run ({', '.join(previous)}); choose another --out or pass --overwrite"
            )
        parent = out.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        from vidur.outdir import TEMP_INFIX, remove_stale_temps

        remove_stale_temps(out)  # what a writer killed mid-write (SIGKILL) left behind
        self.tmp = tmp = parent / f".{out.name}{TEMP_INFIX}{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        self.records = records
        self._thread = None
        self._error: BaseException | None = None
        if not tables:
            return
        if not background:
            try:
                self._write_tables()
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return
        import threading

        self._thread = threading.Thread(target=self._tables_caught, name="vidur-run-tables", daemon=True)
        self._thread.start()

    def _write_tables(self) -> None:
        tmp, records, suffix = self.tmp, self.records, self.suffix
        write_requests_table(tmp / f"requests{suffix}", records)
        if records.batch_summary is not None:
            write_batch_summary_tables(tmp, records, suffix)
        else:
            write_batches_table(tmp / f"batches{suffix}", records)

    def _tables_caught(self) -> None:
        try:
            self._write_tables()
        except BaseException as exc:  # raised in the caller's thread by finish()
            self._error = exc

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(
        self,
        scenario_yaml_text: str,
        summary: Mapping,
        *,
        chrome_trace: bool,
        plots: bool,
        trace_max_events: int = TRACE_MAX_EVENTS,
    ) -> Path:
        """Write the rest, wait for the tables and move the directory into place; returns its path."""
        tmp, out, records = self.tmp, self.out, self.records
        try:
            (tmp / "scenario.yaml").write_text(scenario_yaml_text, encoding="utf-8")
            write_summary_json(tmp / "summary.json", summary)
            self._wait()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if chrome_trace:
                write_chrome_trace(tmp / "trace.json", records, max_events=trace_max_events)
            if plots:
                if plots_available():
                    write_plots(tmp / "plots", records)
                else:
                    warnings.warn(
                        "plots skipped: matplotlib is not installed (pip install 'vidur-sim[plot]')",
                        stacklevel=3,
                    )
            if out.exists():
                for name in self.previous:  # an earlier run's files (overwrite): replaced whole
                    old = out / name
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
                for item in tmp.iterdir():
                    os.replace(item, out / item.name)
                tmp.rmdir()
            else:
                os.rename(tmp, out)
        except BaseException:
            self.abort()
            raise
        return out

    def abort(self) -> None:
        """Give up: wait for the tables (a thread writing them cannot be stopped) and remove
        the temporary directory; ``out_dir`` is untouched."""
        try:
            self._wait()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


#: what :func:`write_run_dir` may write into a run directory
RUN_TABLES = ("requests", "batches", "batch_timeseries", "batch_histograms")
RUN_FILES = (
    "scenario.yaml", "summary.json",
    *(f"{t}{suffix}" for t in RUN_TABLES for suffix in TABLE_FORMATS.values()),
    "trace.json", "plots",
)


def run_files_in(out_dir: str | os.PathLike) -> list[str]:
    """The run files (of :data:`RUN_FILES`) that ``out_dir`` already holds."""
    out = Path(out_dir)
    return [name for name in RUN_FILES if (out / name).exists()] if out.is_dir() else []
