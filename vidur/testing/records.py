"""Build :class:`~vidur.metrics.records.RunRecords` from a few hand-written rows (test support)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vidur.metrics.records import BATCH_COLUMNS, REQUEST_COLUMNS, ReplicaInfo, RunRecords

_INT_REQUEST = {"request_id", "replica", "prompt_tokens", "output_tokens", "preemptions", "recomputed_tokens"}
_FLOAT_BATCH = {"start", "end", "prefill_work"}


def replica_info(replica: int = 0, **kw) -> ReplicaInfo:
    """A :class:`ReplicaInfo` with H100-like defaults; override any field by keyword."""
    d = dict(
        replica=replica,
        device="h100",
        num_gpus=1,
        tp=1,
        pp=1,
        kv_blocks=1000,
        block_size=16,
        peak_flops=989e12,
        memory_bandwidth=3.35e12,
    )
    d.update(kw)
    if "num_gpus" not in kw:
        d["num_gpus"] = d["tp"] * d["pp"]
    return ReplicaInfo(**d)


def records_from_rows(
    requests: Sequence[Mapping],
    batches: Sequence[Mapping] = (),
    *,
    replicas: Sequence[ReplicaInfo] | None = None,
    itl: Sequence[tuple[float, int]] | Mapping[float, int] = (),
    makespan: float | None = None,
    stage_spans: Sequence[Mapping] | None = None,
    wall_seconds: float = 0.0,
) -> RunRecords:
    """Columnar :class:`RunRecords` from row dicts.

    Missing request fields default to: ``request_id`` = row index,
    ``replica`` 0, ``first_scheduled`` = ``arrival``, ``preemptions`` and
    ``recomputed_tokens`` 0; missing batch counters default to 0 and
    ``num_seqs`` to ``num_prefill + num_decode``. ``itl`` is ``[(value,
    count), ...]``. ``replicas`` default to one :func:`replica_info` per
    replica id seen.
    """
    n = len(requests)
    req: dict[str, np.ndarray] = {}
    for c in REQUEST_COLUMNS:
        vals = []
        for i, row in enumerate(requests):
            if c in row:
                v = row[c]
            elif c == "request_id":
                v = i
            elif c == "first_scheduled":
                v = row["arrival"]
            elif c in ("replica", "preemptions", "recomputed_tokens"):
                v = 0
            else:
                raise KeyError(f"request row {i} lacks {c!r}")
            vals.append(np.nan if v is None else v)
        req[c] = np.array(vals, dtype=np.int64 if c in _INT_REQUEST else np.float64).reshape(n)
    nb = len(batches)
    bat: dict[str, np.ndarray] = {}
    for c in BATCH_COLUMNS:
        vals = []
        for row in batches:
            if c in row:
                vals.append(row[c])
            elif c == "num_seqs":
                vals.append(row.get("num_prefill", 0) + row.get("num_decode", 0))
            elif c in ("start", "end", "replica"):
                vals.append(row[c] if c != "replica" else 0)
            else:
                vals.append(0)
        bat[c] = np.array(vals, dtype=np.float64 if c in _FLOAT_BATCH else np.int64).reshape(nb)
    if isinstance(itl, Mapping):
        itl = list(itl.items())
    itl_v = np.array([v for v, _ in itl], dtype=np.float64)
    itl_c = np.array([c for _, c in itl], dtype=np.int64)
    if replicas is None:
        ids = sorted(set(req["replica"].tolist()) | set(bat["replica"].tolist())) or [0]
        replicas = [replica_info(i) for i in ids]
    spans = None
    if stage_spans is not None:
        spans = {
            "replica": np.array([s["replica"] for s in stage_spans], dtype=np.int64),
            "stage": np.array([s["stage"] for s in stage_spans], dtype=np.int64),
            "start": np.array([s["start"] for s in stage_spans], dtype=np.float64),
            "end": np.array([s["end"] for s in stage_spans], dtype=np.float64),
            "batch": np.array([s["batch"] for s in stage_spans], dtype=np.int64),
        }
    if makespan is None:
        ends = [x for x in (np.nanmax(req["completion"]) if n and np.isfinite(req["completion"]).any() else None,
                            bat["end"].max() if nb else None) if x is not None]
        makespan = float(max(ends)) if ends else 0.0
    return RunRecords(
        requests=req,
        batches=bat,
        itl_values=itl_v,
        itl_counts=itl_c,
        replicas=list(replicas),
        makespan=makespan,
        wall_seconds=wall_seconds,
        stage_spans=spans,
    )
