"""Real vLLM runs recorded per request with the engine's own timestamps.

The format is the one of ``data/real-vllm/<run>/`` (vLLM V1's
``RequestStateStats`` as LLMServingSim's harness saves them): a folder with

- ``requests.jsonl``: one JSON object per request with ``input_toks``,
  ``output_toks`` and the engine timestamps ``queued_ts``, ``first_token_ts``,
  ``last_token_ts`` (seconds, one monotonic clock; ``scheduled_ts`` optional);
- ``meta.json`` (optional): ``model``, ``engine_kwargs`` (vLLM's
  ``LLM(...)`` arguments), ``kv_cache`` (``num_gpu_blocks``, ``block_size``,
  ``gpu_memory_utilization``, ``enable_prefix_caching``), ``hardware``
  (``device_name``, ``device_count``, ``device_total_memory_bytes``) and, when
  saved, vLLM's ``resolved_config``.

Arrival = ``queued_ts - min(queued_ts)``; TTFT = ``first_token_ts - queued_ts``;
TPOT = ``(last_token_ts - first_token_ts) / (output_toks - 1)`` (undefined for
one-token outputs); E2E = ``last_token_ts - queued_ts``: vLLM's own
definitions, which :mod:`vidur.metrics` follows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.workload.workload import RequestTable

REQUIRED = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")


@attrs.frozen(eq=False)
class RealRun:
    """One measured run: the request table it replays and what the engine measured.

    Arrays are in arrival order (the order of :attr:`table`). ``meta`` is
    ``meta.json`` as read (empty when absent).
    """

    name: str
    path: str
    table: RequestTable
    ttft: np.ndarray
    tpot: np.ndarray  # NaN where output_toks == 1
    e2e: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.table)

    @property
    def engine_kwargs(self) -> dict:
        """vLLM's ``LLM(...)`` arguments as recorded (empty when unknown)."""
        return dict(self.meta.get("engine_kwargs") or {})

    @property
    def model(self) -> str | None:
        return self.meta.get("model") or self.engine_kwargs.get("model")

    @property
    def device_name(self) -> str | None:
        """The CUDA device name (``NVIDIA GeForce RTX 4090``) when the run recorded it."""
        return (self.meta.get("hardware") or {}).get("device_name")

    def scheduler_config(self) -> dict:
        """vLLM's resolved ``scheduler_config`` (empty when not saved)."""
        return dict((self.meta.get("resolved_config") or {}).get("scheduler_config") or {})

    def kv_cache(self) -> dict:
        """The ``kv_cache`` facts (``num_gpu_blocks`` ...), empty when not saved."""
        return dict(self.meta.get("kv_cache") or {})

    def cudagraph_capture_sizes(self) -> list[int] | None:
        """The decode batch sizes vLLM captured CUDA graphs for, when saved."""
        cc = (self.meta.get("resolved_config") or {}).get("compilation_config") or {}
        sizes = cc.get("cudagraph_capture_sizes")
        return [int(s) for s in sizes] if sizes else None


def _num(row: dict, key: str, where: str) -> float:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise VidurError(f"{where}: {key!r} must be a finite number, got {v!r}")
    return float(v)


def load_real_run(path: str | Path) -> RealRun:
    """Read a run folder (``requests.jsonl`` + optional ``meta.json``) or a bare ``requests.jsonl``."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    jsonl = p / "requests.jsonl" if p.is_dir() else p
    if not jsonl.is_file():
        raise VidurError(f"{path}: no requests.jsonl there; give a real-run folder or its requests.jsonl")
    rows: list[dict[str, Any]] = []
    with jsonl.open() as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VidurError(f"{jsonl}:{i}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise VidurError(f"{jsonl}:{i}: each line must be a JSON object")
            rows.append(row)
    if not rows:
        raise VidurError(f"{jsonl}: no requests")
    cols = {k: np.empty(len(rows)) for k in REQUIRED}
    for i, row in enumerate(rows):
        for k in REQUIRED:
            cols[k][i] = _num(row, k, f"{jsonl}:{i + 1}")
    prompt = cols["input_toks"].astype(np.int64)
    output = cols["output_toks"].astype(np.int64)
    if prompt.min() < 1 or output.min() < 1:
        raise VidurError(f"{jsonl}: input_toks and output_toks must be >= 1 for every request")
    q, ft, lt = cols["queued_ts"], cols["first_token_ts"], cols["last_token_ts"]
    if (ft < q).any() or (lt < ft).any():
        raise VidurError(f"{jsonl}: timestamps out of order (need queued_ts <= first_token_ts <= last_token_ts)")
    order = np.argsort(q, kind="stable")
    q, ft, lt, prompt, output = q[order], ft[order], lt[order], prompt[order], output[order]
    arrival = q - q[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (lt - ft) / (output - 1), np.nan)
    meta: dict = {}
    meta_path = folder / "meta.json"
    if p.is_dir() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise VidurError(f"{meta_path}: not JSON ({exc.msg})") from None
    return RealRun(
        name=folder.name,
        path=str(folder),
        table=RequestTable(arrival=arrival.astype(np.float64), prompt=prompt, output=output),
        ttft=ft - q,
        tpot=tpot,
        e2e=lt - q,
        meta=meta,
    )


def real_run_from_bench(path: str | Path, meta: dict) -> RealRun:
    """A :class:`RealRun` from ``vllm bench serve --save-result --save-detailed`` JSON.

    The file has per-request ``input_lens``, ``output_lens``, ``ttfts`` and E2E latencies
    (:func:`vidur.validate.vllm_results.load_bench_results`); it must also hold ``start_times``
    (when each request was sent), which are the arrivals here. Failed requests are left out.
    ``meta`` supplies what the file does not say, in ``meta.json``'s form (``model``,
    ``engine_kwargs``, ``kv_cache``, ``device``).
    """
    from vidur.validate.vllm_results import load_bench_results

    m = load_bench_results(path)
    if m.start is None:
        raise VidurError(f"{path}: no 'start_times' in the results; arrivals are needed to replay the run "
                         f"(save with a vLLM version that records them, or use the engine-timestamp JSONL)")
    ok = m.ok
    start, prompt, output = m.start[ok], m.prompt[ok].astype(np.int64), m.output[ok].astype(np.int64)
    ttft, e2e = m.ttft[ok], m.e2e[ok]
    order = np.argsort(start, kind="stable")
    start, prompt, output, ttft, e2e = start[order], prompt[order], output[order], ttft[order], e2e[order]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output > 1, (e2e - ttft) / (output - 1), np.nan)
    p = Path(path)
    return RealRun(
        name=p.stem,
        path=str(p),
        table=RequestTable(arrival=(start - start[0]).astype(np.float64), prompt=prompt, output=output),
        ttft=ttft,
        tpot=tpot,
        e2e=e2e,
        meta=dict(meta),
    )
