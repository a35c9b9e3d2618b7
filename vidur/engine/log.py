"""Columnar logs the event loop appends to (no Python object per token)."""

from __future__ import annotations

import numpy as np

from vidur.errors import VidurError
from vidur.metrics.batch_summary import BatchSummary
from vidur.metrics.records import BATCH_COLUMNS

NCOL = len(BATCH_COLUMNS)
_COL = {c: i for i, c in enumerate(BATCH_COLUMNS)}
_C_REPLICA, _C_START, _C_END, _C_NUM_SEQS = _COL["replica"], _COL["start"], _COL["end"], _COL["num_seqs"]
_C_NUM_DECODE, _C_DECODE_KV, _C_KV_USED = _COL["num_decode"], _COL["decode_kv"], _COL["kv_blocks_used"]
#: values of compact decode-run steps (2 each) held before :meth:`BatchLog.pack_runs`
FLUSH_RUN_VALUES = 2 * 65536
#: values (``FLUSH_ROWS`` rows) the single-row list holds before it is packed
#: into a float64 chunk: a Python float in a list costs ~32 bytes, in numpy 8
FLUSH_ROWS = 16384
FLUSH_VALUES = FLUSH_ROWS * NCOL


def _merge_tail(arrays: list[np.ndarray], packed: int) -> int:
    """Concatenate ``arrays[packed:]`` in place into one array (order kept:
    many small fast-forward blocks cost ~100 bytes of header each); returns
    the new packed count."""
    if len(arrays) - packed > 1:
        arrays[packed:] = [np.concatenate(arrays[packed:])]
    return len(arrays)


class BatchLog:
    """Per-iteration rows: single rows flattened into one list (``len(BATCH_COLUMNS)``
    values each) and packed into float64 chunks every ``FLUSH_ROWS`` rows
    (:meth:`flush`, called by the loop when ``len(rows) >= FLUSH_VALUES``),
    fast-forwarded runs as numpy blocks (:meth:`add_block`), and short decode runs
    compactly, rebuilt into a block at each flush (:meth:`pack_runs`).

    With a :class:`~vidur.metrics.batch_summary.BatchSummary` (``metrics.batch_log:
    summary``) every packed chunk and block is folded into it and dropped:
    memory does not grow with the iterations, and :meth:`to_columns` is refused.
    The loop sets the summary's ``done_until`` (latest completion) as requests
    complete."""

    __slots__ = (
        "rows", "chunks", "flushed", "blocks", "packed", "spans", "done", "summary", "block_rows", "run_heads",
        "run_rows", "itl",
    )

    def __init__(self, summary: BatchSummary | None = None):
        self.summary = summary
        self.block_rows = 0  # rows in blocks not yet folded (summary mode)
        self.rows: list[float] = []
        self.chunks: list[np.ndarray] = []  # (FLUSH_ROWS, NCOL) float64: packed single rows, in order
        self.flushed = 0  # single rows packed into chunks
        self.blocks: list[np.ndarray] = []  # (k, NCOL) float64 rows
        self.packed = 0  # blocks[:packed] are already merged (one array per flush)
        self.spans: list[tuple] = []  # (replica, stage, start, end, row number of the batch)
        self.done: tuple | None = None  # to_columns' answer, once asked
        #: decode runs logged compactly (:meth:`pack_runs`): per run (replica, batch size, start,
        #: decode_kv of its first step, steps), and per step (end, kv_blocks_used)
        self.run_heads: list = []
        self.run_rows: list = []
        #: where the decode runs' inter-token latencies go when they are packed (the event loop's)
        self.itl: ITLLog | None = None

    def flush(self) -> None:
        """Pack the single rows logged so far into a float64 chunk (summary mode:
        fold it and the blocks into the summary)."""
        self.pack_runs()
        n = len(self.rows)
        if n:
            # np.array converts a list ~10 % faster than np.fromiter (the same values)
            self.chunks.append(np.array(self.rows, dtype=np.float64).reshape(-1, NCOL))
            self.flushed += n // NCOL
            self.rows = []
        summary = self.summary
        if summary is not None:
            parts = self.chunks + self.blocks
            if parts:
                summary.fold(np.concatenate(parts) if len(parts) > 1 else parts[0])
            self.chunks, self.blocks, self.block_rows = [], [], 0
            summary.commit()
            return
        self.packed = _merge_tail(self.blocks, self.packed)

    def pack_runs(self) -> None:
        """Turn the decode runs logged compactly into one block of full rows.

        A run of ``k`` steps of one decode batch of ``n`` requests on one replica (fast-forward's
        scalar loop) is logged as its head plus each step's end and KV blocks in use: its rows
        differ only there, a step starting where the one before ended and reading ``n`` more KV
        entries. The rows rebuilt here hold the values a row per step would hold (starts are the
        ends logged, decode_kv is integer arithmetic below 2**53); each step after a run's first
        gives :attr:`itl` one inter-token latency of weight ``n``, its end minus the one before
        (the same subtraction)."""
        heads = self.run_heads
        if not heads:
            return
        h = np.array(heads, dtype=np.float64).reshape(-1, 5)
        steps = np.array(self.run_rows, dtype=np.float64).reshape(-1, 2)
        heads.clear()
        self.run_rows.clear()
        lens = h[:, 4].astype(np.int64)
        first = np.cumsum(lens) - lens  # row of each run's first step
        pos = np.arange(len(steps)) - np.repeat(first, lens)  # step within its run
        end = steps[:, 0]
        start = np.empty_like(end)
        start[1:] = end[:-1]
        start[first] = h[:, 2]
        n = np.repeat(h[:, 1], lens)
        block = np.zeros((len(steps), NCOL))  # the prefill columns stay 0
        block[:, _C_REPLICA] = np.repeat(h[:, 0], lens)
        block[:, _C_START] = start
        block[:, _C_END] = end
        block[:, _C_NUM_SEQS] = n
        block[:, _C_NUM_DECODE] = n
        block[:, _C_DECODE_KV] = np.repeat(h[:, 3], lens) + n * pos
        block[:, _C_KV_USED] = steps[:, 1]
        self.blocks.append(block)  # flush() folds or merges it next (add_block would flush again)
        later = pos > 0
        if self.itl is None:
            if later.any():
                raise RuntimeError("BatchLog.pack_runs: decode runs with inter-token latencies but no ITL log")
            return
        self.itl.block_values.append(end[later] - start[later])
        self.itl.block_counts.append(n[later].astype(np.int64))

    def add_block(self, block: np.ndarray) -> None:
        """Log a fast-forwarded run of rows (``(k, NCOL)`` float64)."""
        self.blocks.append(block)
        if self.summary is not None:
            self.block_rows += len(block)
            if self.block_rows >= FLUSH_ROWS:
                self.flush()

    def finish_summary(self) -> BatchSummary:
        """Summary mode, once the run is over: fold what is left and return the summary."""
        self.flush()
        return self.summary

    def single_rows(self) -> int:
        """Single rows logged so far (the row number of the next one)."""
        return self.flushed + len(self.rows) // NCOL

    def to_columns(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """All rows as columns, sorted by (replica, start); and stage spans,
        sorted by (batch row, stage).

        Called once the run is over: it empties the log as it builds the
        columns (peak about the log plus two columns, not twice the log) and
        a second call returns the same columns."""
        if self.done is not None:
            return self.done
        if self.summary is not None:
            raise VidurError(
                "the batch rows were not kept (metrics.batch_log: summary); run with metrics.batch_log: full"
            )
        self.flush()
        parts = self.chunks + self.blocks  # single rows first, then fast-forward blocks
        self.chunks, self.blocks, self.packed = [], [], 0
        cols: list[list] = []  # per part, its columns (contiguous), freed one by one below
        while parts:
            part = parts.pop(0)
            cols.append([part[:, i].copy() for i in range(NCOL)])
            del part
        rep_i, start_i = BATCH_COLUMNS.index("replica"), BATCH_COLUMNS.index("start")

        def column(i: int) -> np.ndarray:
            pieces = [pc[i] for pc in cols]
            return np.concatenate(pieces) if pieces else np.empty(0)

        rep, start = column(rep_i), column(start_i)
        if len(rep) < 2 or bool(np.all((rep[1:] > rep[:-1]) | ((rep[1:] == rep[:-1]) & (start[1:] >= start[:-1])))):
            order = None  # already in (replica, start) order, as a stable sort would leave it: no permutation
        else:
            order = np.lexsort((start, rep))
        del rep, start
        out = {}
        for i, c in enumerate(BATCH_COLUMNS):
            dtype = np.float64 if c in ("start", "end", "prefill_work") else np.int64
            pieces = [pc[i] for pc in cols]
            for pc in cols:
                pc[i] = None
            v = np.concatenate(pieces, dtype=dtype, casting="unsafe") if pieces else np.empty(0, dtype)  # cast as joined
            del pieces
            out[c] = v if order is None else v[order]
            del v
        spans = None
        if self.spans:
            sp = np.array(self.spans, dtype=np.float64)
            batch = sp[:, 4].astype(np.int64)  # the row a span's batch was logged as -> its row in the columns
            if order is not None:
                rank = np.empty(len(order), dtype=np.int64)
                rank[order] = np.arange(len(order))
                batch = rank[batch]
            # in batch-row order, then stage: an order that does not depend on how events of
            # different replicas interleave (the same whether replicas run in one process or many)
            by = np.lexsort((sp[:, 1], batch))
            spans = {
                "replica": sp[by, 0].astype(np.int64),
                "stage": sp[by, 1].astype(np.int64),
                "start": sp[by, 2],
                "end": sp[by, 3],
                "batch": batch[by],
            }
        self.done = (out, spans)
        return self.done


def merge_samples(v: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted samples sorted by value, equal values combined (counts summed
    exactly): the same answer as ``np.unique`` + ``np.bincount`` with about
    half the temporary memory (one permutation and the sorted copies).

    The sort need not be stable (~4x faster): equal values are merged and their
    integer counts summed, in any order. Sorted stably (as always) where order
    shows: +0.0 and -0.0 both present (equal, not the same bits: the first in
    ``v`` stands for both) or float counts (summed in the order they came)."""
    stable = np.asarray(c).dtype.kind not in "iub"  # float counts: summed in the order they came
    perm = np.argsort(v, kind="stable" if stable else None)
    vs = v[perm]
    if not stable:
        lo, hi = np.searchsorted(vs, 0.0, side="left"), np.searchsorted(vs, 0.0, side="right")
        neg = np.signbit(vs[lo:hi])
        if neg.any() and not neg.all():
            perm = np.argsort(v, kind="stable")
            vs = v[perm]
    if len(vs) and np.isnan(vs[-1]):  # NaNs: let np.unique collapse them as it always has
        uniq, inv = np.unique(v, return_inverse=True)
        return uniq, np.bincount(inv.ravel(), weights=c, minlength=len(uniq)).astype(np.int64)
    del v
    cs = c[perm]
    del c, perm
    starts = np.flatnonzero(np.concatenate(([True], vs[1:] != vs[:-1])))
    return vs[starts], np.add.reduceat(cs, starts)


class ITLLog:
    """Inter-token latencies as weighted samples (value, count)."""

    __slots__ = ("values", "counts", "block_values", "block_counts", "packed")

    def __init__(self):
        self.values: list[float] = []
        self.counts: list[int] = []
        self.block_values: list[np.ndarray] = []
        self.block_counts: list[np.ndarray] = []
        self.packed = 0  # block_values/block_counts[:packed] are already merged

    def flush(self) -> None:
        """Pack the single samples logged so far into numpy blocks."""
        if self.values:
            self.block_values.append(np.asarray(self.values, dtype=np.float64))
            self.block_counts.append(np.asarray(self.counts, dtype=np.int64))
            self.values, self.counts = [], []
        _merge_tail(self.block_counts, self.packed)
        self.packed = _merge_tail(self.block_values, self.packed)

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Merged (values, counts), sorted by value, equal values combined."""
        v = np.concatenate([np.asarray(self.values, dtype=np.float64)] + self.block_values)
        c = np.concatenate([np.asarray(self.counts, dtype=np.int64)] + self.block_counts)
        self.values, self.counts, self.block_values, self.block_counts = [], [], [], []  # free the raw samples
        keep = c > 0
        if not keep.all():
            v, c = v[keep], c[keep]
        del keep
        if len(v):
            v, c = merge_samples(v, c)
        # the log is now its merged samples (the raw ones are freed; a second call gives the same)
        self.values, self.counts = [], []
        self.block_values, self.block_counts, self.packed = [v], [c], 1
        return v, c
