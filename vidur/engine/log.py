"""Columnar logs the event loop appends to (no Python object per token)."""

from __future__ import annotations

import numpy as np

from vidur.metrics.records import BATCH_COLUMNS

NCOL = len(BATCH_COLUMNS)


class BatchLog:
    """Per-iteration rows: single rows flattened into one list (``len(BATCH_COLUMNS)``
    values each), fast-forwarded runs as numpy blocks."""

    __slots__ = ("rows", "blocks", "spans")

    def __init__(self):
        self.rows: list[float] = []
        self.blocks: list[np.ndarray] = []  # (k, NCOL) float64 rows
        self.spans: list[tuple] = []  # (replica, stage, start, end, row number of the batch)

    def to_columns(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """All rows as columns, sorted by (replica, start); and stage spans."""
        ncol = NCOL
        single = np.fromiter(self.rows, dtype=np.float64, count=len(self.rows)).reshape(-1, ncol)
        table = np.concatenate([single] + self.blocks) if self.blocks else single
        merged = {c: table[:, i] for i, c in enumerate(BATCH_COLUMNS)}
        order = np.lexsort((merged["start"], merged["replica"]))
        out = {}
        for c in BATCH_COLUMNS:
            v = merged[c][order]
            out[c] = v if c in ("start", "end", "prefill_work") else v.astype(np.int64)
        spans = None
        if self.spans:
            sp = np.array(self.spans, dtype=np.float64)
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            spans = {
                "replica": sp[:, 0].astype(np.int64),
                "stage": sp[:, 1].astype(np.int64),
                "start": sp[:, 2],
                "end": sp[:, 3],
                "batch": rank[sp[:, 4].astype(np.int64)],
            }
        return out, spans


class ITLLog:
    """Inter-token latencies as weighted samples (value, count)."""

    __slots__ = ("values", "counts", "block_values", "block_counts")

    def __init__(self):
        self.values: list[float] = []
        self.counts: list[int] = []
        self.block_values: list[np.ndarray] = []
        self.block_counts: list[np.ndarray] = []

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Merged (values, counts), sorted by value, equal values combined."""
        v = np.concatenate([np.asarray(self.values, dtype=np.float64)] + self.block_values)
        c = np.concatenate([np.asarray(self.counts, dtype=np.int64)] + self.block_counts)
        keep = c > 0
        v, c = v[keep], c[keep]
        if not len(v):
            return v, c
        uniq, inv = np.unique(v, return_inverse=True)
        return uniq, np.bincount(inv, weights=c, minlength=len(uniq)).astype(np.int64)
