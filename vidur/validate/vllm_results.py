"""``vidur compare --real``: measured per-request timings from a real server vs the simulator.

Accepted results format: the JSON file vLLM's ``bench serve`` writes with
``--save-result`` (``vllm bench serve`` / ``benchmarks/benchmark_serving.py``;
add ``--save-detailed`` on versions that omit the per-request lists). One
JSON object whose per-request fields are lists in request order (the order
of the trace that was replayed):

=================  ==========  ===============================================
field              required    meaning
=================  ==========  ===============================================
``input_lens``     yes         prompt tokens of each request
``output_lens``    yes         output tokens each request actually received
``ttfts``          yes         time to first token, seconds
``latencies``      one of      end-to-end latency, seconds (``e2els`` accepted)
``itls``           these two   inter-token latencies, a list of seconds per
                               request; E2E = TTFT + Σ ITL when no latencies
``start_times``    no          when each request was sent (seconds, any
                               origin); used as arrival times when present
``errors``         no          "" for a success; failed requests (non-empty
                               error, or no output) are left out
``duration``       no          benchmark duration, seconds
=================  ==========  ===============================================

The trace is a vidur trace CSV (``arrived_at``, ``num_prefill_tokens``,
``num_decode_tokens``) with one row per request, in the order the benchmark
sent them. Arrival times come from ``start_times`` when the results hold
them (what the server saw), else from the trace (``--arrivals`` chooses);
prompt and output lengths come from the results (what the server actually
processed: output lengths can differ from the trace when a request stops
early), and rows where they differ from the trace are counted in a note.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.validate.compare import RequestTimings, cluster_errors, request_errors

LENGTH_FIELDS = ("input_lens", "output_lens")


@attrs.frozen(eq=False)
class MeasuredRequests:
    """Per-request measurements from a results file (seconds; arrays in request order)."""

    prompt: np.ndarray
    output: np.ndarray
    ttft: np.ndarray
    e2e: np.ndarray
    start: np.ndarray | None
    ok: np.ndarray
    duration: float | None
    path: str

    def __len__(self) -> int:
        return len(self.prompt)


def _numbers(raw: Any, field: str, where: str, *, allow_null: bool = False) -> np.ndarray:
    if not isinstance(raw, list):
        raise VidurError(f"results file {where}: field {field!r} must be a list (one value per request), got {type(raw).__name__}")
    out = np.empty(len(raw), dtype=np.float64)
    for i, v in enumerate(raw):
        if v is None and allow_null:
            out[i] = math.nan
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise VidurError(f"results file {where}: {field}[{i}] must be a finite number, got {v!r}")
        out[i] = float(v)
    return out


def load_bench_results(path: str | Path) -> MeasuredRequests:
    """Read a vLLM ``bench serve`` results JSON (format in the module docstring)."""
    p = Path(path)
    where = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise VidurError(f"cannot read results file {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise VidurError(f"results file {where} is not UTF-8 text; give the JSON that `vllm bench serve --save-result` wrote") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VidurError(f"results file {where} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise VidurError(f"results file {where} must hold a JSON object (vLLM bench serve --save-result), not {type(data).__name__}")
    missing = [f for f in LENGTH_FIELDS + ("ttfts",) if f not in data]
    e2e_field = next((f for f in ("latencies", "e2els") if f in data), None)
    if e2e_field is None and "itls" not in data:
        missing.append("latencies (or itls)")
    if missing:
        raise VidurError(
            f"results file {where} lacks the per-request field(s) {', '.join(missing)}; "
            f"save it with `vllm bench serve --save-result --save-detailed`"
        )
    prompt = _numbers(data["input_lens"], "input_lens", where)
    output = _numbers(data["output_lens"], "output_lens", where)
    ttft = _numbers(data["ttfts"], "ttfts", where, allow_null=True)
    n = len(prompt)
    lengths = {"input_lens": n, "output_lens": len(output), "ttfts": len(ttft)}
    if e2e_field is not None:
        e2e = _numbers(data[e2e_field], e2e_field, where, allow_null=True)
        lengths[e2e_field] = len(e2e)
    else:
        itls = data["itls"]
        if not isinstance(itls, list):
            raise VidurError(f"results file {where}: field 'itls' must be a list of lists of seconds")
        lengths["itls"] = len(itls)
        e2e = np.full(len(itls), math.nan)
    start = None
    if "start_times" in data and data["start_times"] is not None:
        start = _numbers(data["start_times"], "start_times", where, allow_null=True)
        lengths["start_times"] = len(start)
    errors = data.get("errors")
    if errors is not None:
        if not isinstance(errors, list):
            raise VidurError(f"results file {where}: field 'errors' must be a list")
        lengths["errors"] = len(errors)
    if len(set(lengths.values())) != 1:
        detail = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise VidurError(f"results file {where}: per-request fields differ in length ({detail}); the file is truncated or edited")
    if n == 0:
        raise VidurError(f"results file {where} holds no requests")
    if e2e_field is None:
        for i, gaps in enumerate(data["itls"]):
            if not isinstance(gaps, list) or any(isinstance(g, bool) or not isinstance(g, (int, float)) for g in gaps):
                raise VidurError(f"results file {where}: itls[{i}] must be a list of seconds")
            if math.isfinite(ttft[i]):
                e2e[i] = ttft[i] + float(sum(gaps))
    if (prompt < 0).any() or (output < 0).any() or (prompt != np.round(prompt)).any() or (output != np.round(output)).any():
        raise VidurError(f"results file {where}: input_lens and output_lens must be non-negative integers")
    ok = np.isfinite(ttft) & np.isfinite(e2e) & (ttft > 0) & (output >= 1) & (prompt >= 1)
    if errors is not None:
        ok &= np.array([not e for e in errors], dtype=bool)
    if start is not None:
        ok &= np.isfinite(start)
    bad = ok & (e2e + 1e-9 < ttft)
    if bad.any():
        i = int(np.argmax(bad))
        raise VidurError(f"results file {where}: request {i} has E2E latency {e2e[i]:.6g} s below its TTFT {ttft[i]:.6g} s")
    dur = data.get("duration")
    duration = float(dur) if isinstance(dur, (int, float)) and not isinstance(dur, bool) and math.isfinite(dur) else None
    return MeasuredRequests(prompt.astype(np.int64), output.astype(np.int64), ttft, e2e, start, ok, duration, where)


def compare_with_real(
    results: MeasuredRequests,
    trace: str | Path,
    scenario,
    *,
    arrivals: str = "auto",
    host=None,
) -> tuple[dict, RequestTimings, RequestTimings]:
    """Simulate the replayed trace on ``scenario``'s deployment and compare with ``results``.

    ``arrivals``: ``results`` (start_times), ``trace`` (arrived_at) or
    ``auto`` (results when they hold start_times). Returns the report dict
    (``requests`` and ``cluster`` sections, as ``vidur validate``) and the
    measured and simulated per-request timings.
    """
    from vidur.engine.simulation import Simulation
    from vidur.plugins import get_host
    from vidur.workload.trace import read_arrivals, read_lengths
    from vidur.workload.workload import RequestTable

    host = host or get_host()
    if arrivals not in ("auto", "results", "trace"):
        raise VidurError(f"--arrivals must be auto, results or trace, got {arrivals!r}")
    t_arr = np.asarray(read_arrivals(trace), dtype=np.float64)
    t_len = read_lengths(trace)
    n = len(results)
    if len(t_arr) != n:
        raise VidurError(
            f"mismatched request counts: results file {results.path} holds {n} requests but trace {trace} has "
            f"{len(t_arr)} rows; give the trace the benchmark replayed (one row per request, in order)"
        )
    notes: list[str] = []
    ok = results.ok
    dropped = int((~ok).sum())
    if dropped == n:
        raise VidurError(f"results file {results.path}: every request failed; nothing to compare")
    if dropped:
        notes.append(f"{dropped} failed request(s) left out of both sides")
    use_results = arrivals == "results" or (arrivals == "auto" and results.start is not None)
    if use_results:
        if results.start is None:
            raise VidurError(f"--arrivals results needs start_times in {results.path}; use --arrivals trace")
        arr = results.start - np.nanmin(results.start[ok])
        notes.append("arrival times: the results' start_times (when each request was sent)")
    else:
        arr = t_arr - t_arr[ok].min()
        notes.append("arrival times: the trace's arrived_at")
    diff_p = int((results.prompt[ok] != np.asarray(t_len.prompt)[ok]).sum())
    diff_o = int((results.output[ok] != np.asarray(t_len.output)[ok]).sum())
    if diff_p or diff_o:
        notes.append(
            f"lengths from the results file: {diff_p} prompt and {diff_o} output length(s) differ from the trace"
        )
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(arr[idx], kind="stable")]
    a = np.maximum(arr[order], 0.0).astype(np.float64)
    content = None
    from vidur.workload.trace import has_hashes

    if has_hashes(trace):  # block hashes in the trace: the simulated side can cache prefixes
        from vidur.workload.lengths import trace_content

        content = trace_content(trace, order, results.prompt[order])
        notes.append("request content: the trace's hash_ids (512-token blocks)")
    table = RequestTable(a, results.prompt[order].astype(np.int64), results.output[order].astype(np.int64), content)
    sc = scenario.replace(simulation=attrs.evolve(scenario.simulation, progress=False))
    sim = Simulation(sc, host, requests=table)
    res = sim.run(progress=False)
    ttft, e2e, out = results.ttft[order], results.e2e[order], results.output[order].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
    real = RequestTimings(ttft, tpot, e2e, a, a + e2e, out)
    simt = RequestTimings.from_records(res.records)
    notes.append(f"simulated side: {res.estimator}")
    report = {
        "kind": "vidur-compare/1",
        "title": f"vidur compare: {Path(results.path).name} vs {sim.model.name} on {sc.cluster.num_replicas} x "
        f"{sc.cluster.device} (tp {sc.cluster.tensor_parallel}, pp {sc.cluster.pipeline_parallel}), "
        f"{sc.replica_scheduler.name} scheduler, {len(table)} requests",
        "notes": notes,
        "run": {
            "results": results.path,
            "trace": str(trace),
            "model": sim.model.name,
            "device": sc.cluster.device,
            "estimator": res.estimator,
            "num_requests": len(table),
            "failed_requests": dropped,
            "benchmark_duration_s": results.duration,
        },
        "requests": request_errors(real, simt),
        "cluster": cluster_errors(real, simt),
    }
    from vidur.metrics.prefix import prefix_cache_summary

    cache = prefix_cache_summary(res.records)
    if cache is not None:
        report["prefix_cache"] = {"real": None, "sim": cache["cluster"]}
    return report, real, simt
