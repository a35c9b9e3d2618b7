"""Summaries of a run: latency percentiles, throughput, goodput, per-replica use.

Definitions follow vLLM ``bench serve`` where it has one. All times are in
seconds. Per-request metrics are computed over the requests that completed
(a request cut off by the end of a duration-limited run has no E2E latency);
the number left unfinished is reported.

- **TTFT** = first_token − arrival (the end of the iteration that produced
  output token 1, queueing and prefill included).
- **TPOT** = (E2E − TTFT) / (output_tokens − 1); requests with a single output
  token have no TPOT and are left out of its statistics.
- **ITL**: every gap between consecutive output tokens of a request, as
  recorded by the engine (weighted samples ``itl_values``/``itl_counts``).
- **E2E** = completion − arrival; **normalized E2E** = E2E / output_tokens.
- **scheduling delay** = first_scheduled − arrival.
- **Window / makespan**: from the first arrival to the last completion.
  Throughput and goodput divide by it; replica busy fractions use it too
  (batch spans are clipped to it).
- **Goodput**: completed requests whose own TTFT, TPOT, E2E, normalized E2E
  and scheduling delay are each ≤ the SLO bound given for that metric,
  per second of the window. A single-token request meets a TPOT SLO (vLLM
  counts its TPOT as 0). ITL has no per-request value: an ITL SLO is checked
  only as a quantile target (``slo_report``), not per request.
- **SLO report**: for each SLO ``name: (quantile, bound)``, the metric's
  quantile over all samples (linear interpolation, as ``numpy.quantile``)
  must be ≤ bound.
- **Busy time** of a replica: the length of the union of its batch spans
  (``start``..``end``); with pipeline parallelism and ``stage_spans``, the
  union of its stage spans (any stage working). **GPU busy seconds**: for
  pp = 1, busy time × num_gpus; with stage spans, tp × Σ over stages of that
  stage's busy time; without stage spans, busy time × num_gpus (an upper bound).
- **KV utilisation**: kv_blocks_used / kv_blocks after forming each batch,
  averaged with the batch's duration (end − start) as weight; max over batches.
- **MFU** = Σ batch FLOPs / (GPU busy seconds × peak FLOP/s per GPU): the
  fraction of peak compute the replica's GPUs achieved while they were
  working. ``mfu_window`` divides instead by window × num_gpus × peak (it
  counts idle time). **MBU** and ``mbu_window`` are the same with bytes
  moved and memory bandwidth. They need ``flops_fn``/``bytes_fn``.
- With ``metrics.batch_log: summary`` the batch rows were folded during the
  run into per-replica aggregates (``RunRecords.batch_summary``): the same
  numbers, float sums added in another order (to ~1e-15 relative), FLOPs and
  bytes priced then with the model's cost functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vidur.errors import VidurError
from vidur.metrics.records import ReplicaInfo, RunRecords
from vidur.metrics import table
from vidur.metrics.table import PER_REQUEST_METRICS, SLO_METRICS, request_metrics_of

# SLO_METRICS and PER_REQUEST_METRICS are re-exported from the metric table
#: Percentiles every latency statistic reports.
PERCENTILES = (50, 90, 95, 99)

SCHEMA_VERSION = 1

#: ``flops_fn(batches, replica) -> per-batch FLOPs`` summed over all GPUs of the
#: replica; ``batches`` holds that replica's rows of ``RunRecords.batches``.
BatchCostFn = Callable[[Mapping[str, np.ndarray], ReplicaInfo], "np.ndarray | float"]

DEFINITIONS = {
    "units": "seconds unless the key says otherwise",
    **{m.name: m.definition for m in table.METRICS},
    "window": "first arrival to last completion; throughput, goodput and busy fractions use it",
    "goodput": "completed requests meeting every per-request SLO (value <= bound), per second",
    "slo": "met when the metric's quantile (linear) over all samples is <= bound",
    "busy_fraction": "union of batch (or stage) spans within the window / window",
    "kv_utilization": "kv_blocks_used / kv_blocks per batch, weighted by batch duration",
    "mfu": "sum batch FLOPs / (GPU busy seconds * peak FLOP/s per GPU)",
    "mfu_window": "sum batch FLOPs / (window * num_gpus * peak FLOP/s per GPU)",
    "mbu": "sum batch bytes / (GPU busy seconds * memory bandwidth per GPU)",
    "mbu_window": "sum batch bytes / (window * num_gpus * memory bandwidth per GPU)",
    "throughput": "completed requests (their prompt/output tokens) / window",
}


# ---------------------------------------------------------------- helpers


def _f(x) -> float | None:
    """A JSON-safe float (None for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def weighted_percentile(values, counts, q):
    """Percentile(s) ``q`` (0..100) of samples where ``values[i]`` occurs ``counts[i]`` times.

    Equals ``np.percentile(np.repeat(values, counts), q)`` (linear
    interpolation) without expanding the samples. Entries with a count ≤ 0
    are ignored; with no samples the result is NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(counts).ravel()
    if v.shape != c.shape:
        raise ValueError("values and counts differ in length")
    qa = np.asarray(q, dtype=np.float64)
    if np.any((qa < 0) | (qa > 100)):
        raise ValueError("percentiles must be in [0, 100]")
    keep = c > 0
    if not keep.all():
        v, c = v[keep], c[keep]
    if v.size == 0:
        return np.full(qa.shape, np.nan) if qa.ndim else float("nan")
    order = np.argsort(v, kind="stable")
    v = v[order]
    cum = np.cumsum(c[order])
    n = cum[-1]
    quant = qa.ravel() / 100.0
    # numpy's "linear" method: virtual index (n - 1) * q
    h = n * quant + (1.0 - quant) - 1.0
    h = np.clip(h, 0, n - 1)
    lo = np.floor(h)
    t = h - lo
    lo_i = lo.astype(np.int64)
    hi_i = np.minimum(lo_i + 1, n - 1)
    a = v[np.searchsorted(cum, lo_i, side="right")]
    b = v[np.searchsorted(cum, hi_i, side="right")]
    d = b - a
    res = np.where(t >= 0.5, b - d * (1.0 - t), a + d * t)
    res = np.where(a == b, a, res)
    return res.reshape(qa.shape) if qa.ndim else float(res[0])


def _stats(x: np.ndarray) -> dict[str, Any]:
    """count/mean/min/max/p50/p90/p95/p99 of a 1-d sample (NaNs dropped)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    out: dict[str, Any] = {"count": int(x.size)}
    if x.size == 0:
        out.update({"mean": None, "min": None, "max": None})
        out.update({f"p{p}": None for p in PERCENTILES})
        return out
    ps = np.percentile(x, PERCENTILES)
    out.update({"mean": _f(x.mean()), "min": _f(x.min()), "max": _f(x.max())})
    out.update({f"p{p}": _f(v) for p, v in zip(PERCENTILES, ps)})
    return out


def _weighted_stats(values: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(counts).ravel()
    keep = (c > 0) & np.isfinite(v)
    v, c = v[keep], c[keep]
    n = int(c.sum()) if c.size else 0
    out: dict[str, Any] = {"count": n}
    if n == 0:
        out.update({"mean": None, "min": None, "max": None})
        out.update({f"p{p}": None for p in PERCENTILES})
        return out
    ps = weighted_percentile(v, c, PERCENTILES)
    out.update(
        {
            "mean": _f(np.dot(v, c.astype(np.float64)) / n),
            "min": _f(v.min()),
            "max": _f(v.max()),
        }
    )
    out.update({f"p{p}": _f(x) for p, x in zip(PERCENTILES, ps)})
    return out


def request_metrics(records: RunRecords) -> dict[str, np.ndarray]:
    """Per-request derived metrics, one value per request row, for every
    per-request entry of the metric table (:data:`vidur.metrics.table.METRICS`)
    whose columns the run has, plus the boolean ``completed``. A value is NaN
    where undefined (unfinished request; TPOT of a single-token request).
    """
    return request_metrics_of(records.requests)


def _check_slos(slos) -> dict[str, tuple[float, float]]:
    if slos is None:
        return {}
    if not isinstance(slos, Mapping):
        raise VidurError(f"SLOs must be a mapping of metric name to (quantile, bound), got {slos!r}")
    out = {}
    for name, spec in slos.items():
        valid = table.slo_metrics()
        if name not in valid:
            raise VidurError(f"unknown SLO metric {name!r}; valid metrics: {', '.join(valid)}")
        if isinstance(spec, Mapping):
            try:
                q, bound = spec["quantile"], spec["bound"]
            except KeyError:
                raise VidurError(
                    f"SLO {name!r} must give 'quantile' and 'bound', got {dict(spec)!r}"
                ) from None
        else:
            try:
                q, bound = spec
            except (TypeError, ValueError):
                raise VidurError(
                    f"SLO {name!r} must be (quantile, bound_seconds), got {spec!r}"
                ) from None
        try:
            q, bound = float(q), float(bound)
        except (TypeError, ValueError):
            raise VidurError(f"SLO {name!r}: quantile and bound must be numbers, got {spec!r}") from None
        if not 0.0 < q <= 1.0:
            raise VidurError(f"SLO {name!r}: quantile must be in (0, 1], got {q}")
        if not (bound >= 0.0 and math.isfinite(bound)):
            raise VidurError(f"SLO {name!r}: bound must be a finite number of seconds >= 0, got {bound}")
        out[name] = (q, bound)
    return out


def _quantile_key(q: float) -> str:
    p = q * 100.0
    return f"p{p:.10g}"


def _slo_report_from_values(slos, metrics, itl_values, itl_counts) -> dict[str, dict]:
    rep = {}
    for name, (q, bound) in slos.items():
        if name == "itl":
            value = weighted_percentile(itl_values, itl_counts, q * 100.0)
        else:
            x = metrics[name]
            x = x[np.isfinite(x)]
            value = float(np.quantile(x, q)) if x.size else float("nan")
        v = _f(value)
        rep[name] = {"quantile": q, "value": v, "bound": bound, "met": v is not None and v <= bound}
    return rep


def slo_report(records_or_summary: "RunRecords | Mapping", slos) -> dict[str, dict]:
    """Check each SLO ``{name: (quantile, bound_s)}`` as a quantile target.

    Returns ``{name: {"quantile", "value", "bound", "met"}}`` where ``value``
    is the metric's quantile over all its samples and ``met`` is
    ``value <= bound`` (False when there is no sample). Given a summary dict
    (from :func:`summarize`), the quantile is read from its stored
    percentiles or SLO section; other quantiles need the records. Unknown
    metric names raise :class:`VidurError` listing :data:`SLO_METRICS`.
    """
    slos = _check_slos(slos)
    if isinstance(records_or_summary, RunRecords):
        rec = records_or_summary
        return _slo_report_from_values(
            slos, request_metrics(rec), rec.itl_values, rec.itl_counts
        )
    summary = records_or_summary
    rep = {}
    stored = summary.get("slo") or {}
    for name, (q, bound) in slos.items():
        st = stored.get(name)
        if st is not None and math.isclose(st.get("quantile", -1.0), q, rel_tol=0, abs_tol=1e-12):
            value = st["value"]
        else:
            stats = summary["latency"][name]
            key = _quantile_key(q)
            if q == 1.0:
                key = "max"
            if key not in stats:
                have = ", ".join(
                    str(p / 100) for p in PERCENTILES
                )
                raise VidurError(
                    f"summary holds no {q} quantile of {name!r} (it has {have} and 1.0); "
                    "pass the run records, or give this SLO to summarize()"
                )
            value = stats[key]
        rep[name] = {
            "quantile": q,
            "value": value,
            "bound": bound,
            "met": value is not None and value <= bound,
        }
    return rep


def _union_length(start: np.ndarray, end: np.ndarray) -> float:
    """Total length covered by intervals [start, end) (vectorised)."""
    if start.size == 0:
        return 0.0
    if start.size > 1 and np.any(start[1:] < start[:-1]):
        order = np.argsort(start, kind="stable")
        start, end = start[order], end[order]
    cm = np.maximum.accumulate(end)
    prev = np.empty_like(cm)
    prev[0] = -np.inf
    prev[1:] = cm[:-1]
    return float(np.sum(cm - np.maximum(start, prev)))


def _clip(start, end, t0, t1):
    s = np.clip(start, t0, t1)
    e = np.clip(end, t0, t1)
    return s, np.maximum(e, s)


def _group_slices(key: np.ndarray):
    """Return (sorted unique keys, order, boundaries) to iterate groups fast."""
    if key.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    if key.size == 1 or np.all(key[1:] >= key[:-1]):
        order = None
        k = key
    else:
        order = np.argsort(key, kind="stable")
        k = key[order]
    cut = np.flatnonzero(k[1:] != k[:-1]) + 1
    bounds = np.concatenate([[0], cut, [k.size]])
    return k[bounds[:-1]], order, bounds


def _take(arr: np.ndarray, order, lo: int, hi: int) -> np.ndarray:
    return arr[lo:hi] if order is None else arr[order[lo:hi]]


def _cost_sum(fn, cols, info, n: int) -> float | None:
    if fn is None or info is None:
        return None
    if n == 0:
        return 0.0
    val = np.asarray(fn(cols, info), dtype=np.float64)
    if val.ndim == 0:
        return float(val) * n
    if val.shape != (n,):
        raise ValueError(f"cost function returned shape {val.shape}, expected ({n},)")
    return float(val.sum())


def _replica_head(rid: int, info: ReplicaInfo | None, req_replica_stats: dict[str, int]) -> dict[str, Any]:
    """A replica summary's first keys: its facts and its request counts."""
    out: dict[str, Any] = {"replica": int(rid)}
    if info is not None:
        out.update(
            {
                "device": info.device,
                "num_gpus": int(info.num_gpus),
                "tp": int(info.tp),
                "pp": int(info.pp),
                "kv_blocks": int(info.kv_blocks),
                "block_size": int(info.block_size),
            }
        )
    out["requests"] = req_replica_stats.get("requests", 0)
    out["preemptions"] = req_replica_stats.get("preemptions", 0)
    return out


def _put_utilization(out: dict, flops, nbytes, info: ReplicaInfo | None, gpu_busy: float, window: float, num_gpus: int) -> None:
    """MFU/MBU over busy time and over the window, and the totals they come from."""
    for key, total, peak in (
        ("mfu", flops, info.peak_flops if info else None),
        ("mbu", nbytes, info.memory_bandwidth if info else None),
    ):
        if total is None or not peak:
            out[key] = None
            out[key + "_window"] = None
            continue
        out[key] = _f(total / (gpu_busy * peak)) if gpu_busy > 0 else None
        out[key + "_window"] = _f(total / (window * num_gpus * peak)) if window > 0 else None
    out["total_flops"] = _f(flops)
    out["total_bytes"] = _f(nbytes)


def _replica_summary(
    rid: int,
    info: ReplicaInfo | None,
    cols: dict[str, np.ndarray],
    spans: dict[str, np.ndarray] | None,
    req_replica_stats: dict[str, int],
    t0: float,
    t1: float,
    flops_fn,
    bytes_fn,
) -> dict[str, Any]:
    window = t1 - t0
    n = len(cols["start"]) if "start" in cols else 0
    start = np.asarray(cols.get("start", np.empty(0)), dtype=np.float64)
    end = np.asarray(cols.get("end", np.empty(0)), dtype=np.float64)
    num_seqs = np.asarray(cols.get("num_seqs", np.empty(0)), dtype=np.float64)
    prefill_tokens = np.asarray(cols.get("prefill_tokens", np.zeros(n)), dtype=np.int64)
    num_decode = np.asarray(cols.get("num_decode", np.zeros(n)), dtype=np.int64)
    tokens = prefill_tokens + num_decode
    out = _replica_head(rid, info, req_replica_stats)
    out["num_batches"] = int(n)
    if n:
        bp = np.percentile(num_seqs, (50, 99))
        tp_ = np.percentile(tokens, (50, 99))
        out["batch_size"] = {"mean": _f(num_seqs.mean()), "p50": _f(bp[0]), "p99": _f(bp[1]), "max": _f(num_seqs.max())}
        out["tokens_per_batch"] = {"mean": _f(tokens.mean()), "p50": _f(tp_[0]), "p99": _f(tp_[1]), "max": _f(tokens.max())}
    else:
        out["batch_size"] = {"mean": None, "p50": None, "p99": None, "max": None}
        out["tokens_per_batch"] = {"mean": None, "p50": None, "p99": None, "max": None}
    out["prefill_tokens"] = int(prefill_tokens.sum())
    out["decode_tokens"] = int(num_decode.sum())

    # busy time
    tp = info.tp if info is not None else 1
    num_gpus = info.num_gpus if info is not None else 1
    stage_busy = None
    if spans is not None and spans["start"].size:
        s, e = _clip(spans["start"], spans["end"], t0, t1)
        busy = _union_length(s, e)
        stages, order, bounds = _group_slices(np.asarray(spans["stage"], dtype=np.int64))
        stage_busy = []
        for i, st in enumerate(stages):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            stage_busy.append(_union_length(_take(s, order, lo, hi), _take(e, order, lo, hi)))
        gpu_busy = tp * float(sum(stage_busy))
        busy_source = "stage_spans"
    else:
        s, e = _clip(start, end, t0, t1)
        busy = _union_length(s, e)
        gpu_busy = busy * num_gpus
        busy_source = "batches"
    out["busy_seconds"] = _f(busy)
    out["busy_fraction"] = _f(busy / window) if window > 0 else None
    out["busy_source"] = busy_source
    if stage_busy is not None:
        out["stage_busy_fraction"] = [_f(b / window) if window > 0 else None for b in stage_busy]
    out["gpu_busy_seconds"] = _f(gpu_busy)

    # KV utilisation
    if info is not None and info.kv_blocks > 0 and n and "kv_blocks_used" in cols:
        util = np.asarray(cols["kv_blocks_used"], dtype=np.float64) / float(info.kv_blocks)
        w = np.maximum(end - start, 0.0)
        wsum = float(w.sum())
        mean = float(np.dot(util, w) / wsum) if wsum > 0 else float(util.mean())
        out["kv_utilization"] = {"mean": _f(mean), "max": _f(util.max())}
    else:
        out["kv_utilization"] = {"mean": None, "max": None}

    # MFU / MBU
    flops = _cost_sum(flops_fn, cols, info, n)
    nbytes = _cost_sum(bytes_fn, cols, info, n)
    _put_utilization(out, flops, nbytes, info, gpu_busy, window, num_gpus)
    return out


def _replica_summary_folded(
    rid: int,
    info: ReplicaInfo | None,
    agg,
    req_replica_stats: dict[str, int],
    t0: float,
    t1: float,
) -> dict[str, Any]:
    """:func:`_replica_summary` from a :class:`~vidur.metrics.batch_summary.BatchSummary`
    (``metrics.batch_log: summary``): the same keys and numbers."""
    from vidur.metrics.batch_summary import hist_percentile

    window = t1 - t0
    n = int(agg.n[rid]) if rid < agg.n.size else 0
    out = _replica_head(rid, info, req_replica_stats)
    out["num_batches"] = n
    for key, hist, total in (("batch_size", agg.seqs_hist, agg.seqs_sum), ("tokens_per_batch", agg.tok_hist, agg.tok_sum)):
        if n:
            v, c = hist.of(rid)
            p = hist_percentile(v, c, (50, 99))
            out[key] = {"mean": _f(float(total[rid]) / n), "p50": _f(p[0]), "p99": _f(p[1]), "max": _f(v[-1])}
        else:
            out[key] = {"mean": None, "p50": None, "p99": None, "max": None}
    out["prefill_tokens"] = int(agg.prefill_sum[rid]) if n else 0
    out["decode_tokens"] = int(agg.decode_sum[rid]) if n else 0

    num_gpus = info.num_gpus if info is not None else 1
    busy = agg.busy_seconds(rid, t0, t1) if n else 0.0
    gpu_busy = busy * num_gpus
    out["busy_seconds"] = _f(busy)
    out["busy_fraction"] = _f(busy / window) if window > 0 else None
    out["busy_source"] = "batches"
    out["gpu_busy_seconds"] = _f(gpu_busy)

    if info is not None and info.kv_blocks > 0 and n:
        kvb = float(info.kv_blocks)
        wsum = float(agg.w_sum[rid])
        mean = float(agg.kv_w[rid]) / kvb / wsum if wsum > 0 else float(agg.kv_sum[rid]) / kvb / n
        out["kv_utilization"] = {"mean": _f(mean), "max": _f(float(agg.kv_max[rid]) / kvb)}
    else:
        out["kv_utilization"] = {"mean": None, "max": None}

    priced = agg.cost is not None and info is not None
    flops = (float(agg.flops[rid]) if n else 0.0) if priced else None
    nbytes = (float(agg.nbytes[rid]) if n else 0.0) if priced else None
    _put_utilization(out, flops, nbytes, info, gpu_busy, window, num_gpus)
    return out


def model_cost_fns(model, *, kv_dtype_bytes: int | None = None) -> tuple[BatchCostFn, BatchCostFn]:
    """``(flops_fn, bytes_fn)`` for :func:`summarize` from :mod:`vidur.model.cost`.

    ``model`` is a :class:`vidur.model.spec.ModelSpec`; each replica's TP/PP
    come from its :class:`ReplicaInfo`. ``batch_flops``/``batch_bytes`` give
    per-GPU figures (averaged over stages); they are multiplied by
    tp × pp to give the whole replica's total, as ``summarize`` expects.
    The optional batch column ``prefill_kv`` is used when the engine records it.
    """
    from vidur.model.cost import batch_bytes, batch_flops

    def _args(cols):
        pt = np.asarray(cols["prefill_tokens"], dtype=np.float64)
        nd = np.asarray(cols["num_decode"], dtype=np.float64)
        return pt, nd, pt + nd

    def flops_fn(cols, info):
        pt, nd, tok = _args(cols)
        per_gpu = batch_flops(
            model, info.tp, tok, cols["prefill_work"], cols["decode_kv"], cols["num_seqs"],
            pp=info.pp, kv_dtype_bytes=kv_dtype_bytes,
        )
        return per_gpu * (info.tp * info.pp)

    def bytes_fn(cols, info):
        pt, nd, tok = _args(cols)
        per_gpu = batch_bytes(
            model, info.tp, tok, cols["prefill_work"], cols["decode_kv"], cols["num_seqs"],
            pp=info.pp, prefill_tokens=pt, prefill_kv=cols.get("prefill_kv"), num_decode=nd,
            kv_dtype_bytes=kv_dtype_bytes,
        )
        return per_gpu * (info.tp * info.pp)

    return _in_chunks(flops_fn), _in_chunks(bytes_fn)


#: rows per piece when a cost function prices a long column (its temporaries stay in cache)
COST_CHUNK = 32_768


def _in_chunks(fn: BatchCostFn) -> BatchCostFn:
    """``fn`` (per-row arithmetic only) applied to pieces of at most :data:`COST_CHUNK` rows and
    joined: the same values (each row's arithmetic is the same), ~2x faster on a long log."""

    def chunked(cols, info):
        n = len(cols["prefill_tokens"])
        if n <= COST_CHUNK:
            return fn(cols, info)
        return np.concatenate([
            fn({k: v[lo:lo + COST_CHUNK] for k, v in cols.items()}, info) for lo in range(0, n, COST_CHUNK)
        ])

    chunked.__doc__ = fn.__doc__
    return chunked


# ---------------------------------------------------------------- summarize


def summarize(
    records: RunRecords,
    slos: Mapping[str, tuple[float, float]] | None = None,
    *,
    flops_fn: BatchCostFn | None = None,
    bytes_fn: BatchCostFn | None = None,
) -> dict[str, Any]:
    """Summarise a run into a JSON-ready nested dict (see the module docstring).

    ``slos`` maps metric names in :data:`SLO_METRICS` to ``(quantile,
    bound_seconds)``; they drive ``goodput`` and the ``slo`` section.
    ``flops_fn``/``bytes_fn`` (for MFU/MBU) are called once per replica as
    ``fn(batch_columns, replica_info)`` with that replica's batch rows and
    return the FLOPs (bytes moved) of each batch summed over all the
    replica's GPUs, as an array (or a scalar applied to every batch).
    """
    slos = _check_slos(slos)
    req = records.requests
    n_req = len(req["arrival"])
    m = request_metrics(records)
    completed = m["completed"]
    n_done = int(completed.sum())
    arrival = np.asarray(req["arrival"], dtype=np.float64)
    completion = np.asarray(req["completion"], dtype=np.float64)
    prompt = np.asarray(req["prompt_tokens"], dtype=np.int64)
    output = np.asarray(req["output_tokens"], dtype=np.int64)
    preempt = np.asarray(req["preemptions"], dtype=np.int64)
    recomputed = np.asarray(req.get("recomputed_tokens", np.zeros(n_req)), dtype=np.int64)

    t0 = float(arrival.min()) if n_req else 0.0
    t1 = float(completion[completed].max()) if n_done else t0
    window = t1 - t0

    lat, other = {}, {}
    for metric in table.METRICS:
        if not metric.per_request:  # ITL: weighted samples
            lat[metric.name] = _weighted_stats(records.itl_values, records.itl_counts)
        elif metric.name in m:
            (lat if metric.unit == "s" else other)[metric.name] = _stats(m[metric.name])

    done_prompt = int(prompt[completed].sum())
    done_output = int(output[completed].sum())
    if window > 0:
        thr = {
            "requests_per_s": n_done / window,
            "output_tokens_per_s": done_output / window,
            "prompt_tokens_per_s": done_prompt / window,
            "total_tokens_per_s": (done_prompt + done_output) / window,
        }
    else:
        thr = {k: None for k in ("requests_per_s", "output_tokens_per_s", "prompt_tokens_per_s", "total_tokens_per_s")}

    agg = records.batch_summary
    if agg is not None:
        if flops_fn is not None or bytes_fn is not None:
            raise VidurError(
                "this run's batches were summarised during the run (metrics.batch_log: summary), "
                "FLOPs and bytes priced then with the model's cost functions: pass no flops_fn/bytes_fn, "
                "or rerun with metrics.batch_log: full"
            )
        b = {}
        n_batch = agg.num_batches
        prefill_sum, decode_sum = int(agg.prefill_sum.sum()), int(agg.decode_sum.sum())
    else:
        b = records.batches
        n_batch = len(b["start"]) if "start" in b else 0
        prefill_sum = int(np.sum(b["prefill_tokens"])) if n_batch else 0
        decode_sum = int(np.sum(b["num_decode"])) if n_batch else 0
    tokens = {
        "prompt_tokens": int(prompt.sum()),
        "output_tokens": int(output.sum()),
        "completed_prompt_tokens": done_prompt,
        "completed_output_tokens": done_output,
        "prefill_tokens": prefill_sum,
        "decode_tokens": decode_sum,
        "recomputed_tokens": int(recomputed.sum()),
    }

    # goodput
    if slos:
        good = completed.copy()
        used = []
        for name, (_q, bound) in slos.items():
            if name not in m:
                continue
            used.append(name)
            good &= ~(m[name] > bound)  # undefined for a completed request (TPOT of one token): met
        n_good = int(good.sum())
        goodput = {
            "slos": {k: {"quantile": q, "bound": bd} for k, (q, bd) in slos.items()},
            "per_request_metrics": used,
            "requests_meeting": n_good,
            "fraction": n_good / n_req if n_req else None,
            "requests_per_s": n_good / window if window > 0 else None,
        }
        slo = _slo_report_from_values(slos, m, records.itl_values, records.itl_counts)
    else:
        goodput = None
        slo = None

    # per replica
    rep_col = np.asarray(b["replica"], dtype=np.int64) if n_batch and agg is None else np.empty(0, dtype=np.int64)
    rkeys, rorder, rbounds = _group_slices(rep_col)
    batch_groups = {int(k): (int(rbounds[i]), int(rbounds[i + 1])) for i, k in enumerate(rkeys)}
    span_groups = {}
    spans = records.stage_spans
    if spans is not None and len(spans.get("start", ())):
        sk, sorder, sb = _group_slices(np.asarray(spans["replica"], dtype=np.int64))
        for i, k in enumerate(sk):
            lo, hi = int(sb[i]), int(sb[i + 1])
            span_groups[int(k)] = {
                c: _take(np.asarray(spans[c]), sorder, lo, hi) for c in ("stage", "start", "end")
            }
    req_rep = np.asarray(req["replica"], dtype=np.int64)
    if n_req:
        valid = req_rep >= 0
        ids = req_rep[valid]
        nrep = int(ids.max()) + 1 if ids.size else 0
        per_rep_requests = np.bincount(ids, minlength=nrep)
        per_rep_preempt = np.bincount(ids, weights=preempt[valid], minlength=nrep)
    else:
        per_rep_requests = per_rep_preempt = np.zeros(0)
    infos = {int(r.replica): r for r in records.replicas}
    all_ids = sorted(set(infos) | set(batch_groups) | set(agg.replicas() if agg is not None else ()))
    replicas = []
    for rid in all_ids:
        rs = {
            "requests": int(per_rep_requests[rid]) if rid < len(per_rep_requests) else 0,
            "preemptions": int(per_rep_preempt[rid]) if rid < len(per_rep_preempt) else 0,
        }
        if agg is not None:
            replicas.append(_replica_summary_folded(rid, infos.get(rid), agg, rs, t0, t1))
            continue
        if rid in batch_groups:
            lo, hi = batch_groups[rid]
            cols = {c: _take(np.asarray(v), rorder, lo, hi) for c, v in b.items()}
        else:
            cols = {c: np.asarray(v)[:0] for c, v in b.items()}
        replicas.append(
            _replica_summary(rid, infos.get(rid), cols, span_groups.get(rid), rs, t0, t1, flops_fn, bytes_fn)
        )

    out = {
        "schema": SCHEMA_VERSION,
        "requests": {
            "total": int(n_req),
            "completed": n_done,
            "unfinished": int(n_req - n_done),
        },
        "window": {"start": _f(t0), "end": _f(t1), "duration": _f(window)},
        "simulated_seconds": _f(records.makespan),
        "wall_seconds": _f(records.wall_seconds),
        "latency": lat,
        **({"request_metrics": other} if other else {}),
        "throughput": {k: _f(v) for k, v in thr.items()},
        "tokens": tokens,
        "preemptions": {
            "total": int(preempt.sum()),
            "requests_preempted": int(np.count_nonzero(preempt)),
            "per_request": _stats(preempt.astype(np.float64)),
            "recomputed_tokens": int(recomputed.sum()),
        },
        "goodput": goodput,
        "slo": slo,
        "num_batches": int(n_batch),
        "replicas": replicas,
        "definitions": {**DEFINITIONS, **{mt.name: mt.definition for mt in table.METRICS}},
    }
    from vidur.metrics.prefix import prefix_cache_summary

    cache = prefix_cache_summary(records)
    if cache is not None:  # only runs with prefix caching have the section
        out["prefix_cache"] = cache
        for rs, entry in zip(replicas, cache["replicas"]):
            if entry is not None:
                rs["prefix_cache"] = entry
    return out
