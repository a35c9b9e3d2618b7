"""The per-batch log folded into per-replica aggregates (``metrics.batch_log: summary``).

A large run logs millions of batches; keeping every row costs ~90 bytes per
batch (~0.75 kB per request). In summary mode the event loop's batch log
hands each packed chunk of rows to :meth:`BatchSummary.fold` and drops it, so
memory stays flat however long the run. What is kept per replica is exactly
what :func:`vidur.metrics.summary.summarize` needs to give the same numbers
as the full log:

- exact histograms (``value -> count``) of batch size and tokens per batch
  (mean, p50/p99 with numpy's linear interpolation, max: see
  :func:`hist_percentile`), integer sums of prefill and decode tokens,
  batch counts;
- busy seconds: for pp = 1 a replica's batches never overlap, so the union
  of their spans clipped to the window is a sum of lengths: Σ duration less
  what clipping takes off; a batch that ends after the latest completion seen
  so far is kept *pending* (the window's end, the last completion, is not
  known yet) and dropped once a later completion comes (it needs no clipping);
  :meth:`busy_seconds` clips what is still pending;
- KV use: Σ used x duration, Σ duration, Σ used and the max (duration-weighted
  mean and max of ``kv_blocks_used / kv_blocks``);
- FLOPs and bytes: the cost functions (vectorised over columns) applied to
  each chunk and summed per replica;
- a deterministic sample of at most :data:`SAMPLE_PER_REPLICA` rows per
  replica (rows whose hashed start time has its low ``k`` bits zero, ``k``
  the smallest that keeps the replica under the cap: the same rows whatever
  the order or the process the rows were folded in), for the operator time
  shares;
- per-replica time series in buckets of :meth:`TimeSeries.width_s` (1/16 s
  doubled as the run grows so that there are at most
  :data:`TIMESERIES_MAX_BUCKETS` buckets), all integers (busy nanoseconds,
  batches, sequences, tokens, KV blocks), so merging and coarsening are exact.

Float sums (busy seconds, KV x duration, FLOPs, bytes) add the same terms as
the full log in another order: they agree with the full log's to about
1e-15 relative, not bit for bit. Everything else is exact. They do not depend
on how the rows were chunked, nor on which process folded them: a replica's
rows are summed in blocks of :data:`FLOAT_BLOCK` rows in start order (each
block from zero, the blocks added in order, the last partial block when read),
so one process and several give the same bits.

Aggregates are kept per replica index and are **mergeable by replica**:
:func:`merge_batch_summaries` unions summaries of disjoint replica sets (the
parts of a run simulated in separate processes).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from vidur.errors import VidurError
from vidur.metrics.records import BATCH_COLUMNS
from vidur.scenario import BATCH_LOG_MODES

NCOL = len(BATCH_COLUMNS)
_C = {c: i for i, c in enumerate(BATCH_COLUMNS)}
C_REP, C_START, C_END = _C["replica"], _C["start"], _C["end"]
C_SEQS, C_PT, C_ND, C_KV = _C["num_seqs"], _C["prefill_tokens"], _C["num_decode"], _C["kv_blocks_used"]

#: ``auto`` keeps the full per-batch log up to this many requests and summarises above
#: (100,000 requests log about 75 MB of batch rows; above it the log dominates the run's memory)
AUTO_FULL_MAX_REQUESTS = 100_000
#: rows per replica kept as the sample the operator time shares are computed from
SAMPLE_PER_REPLICA = 1024
#: narrowest time-series bucket (seconds); doubled while the run would need more buckets than the cap
TIMESERIES_BASE_S = 1.0 / 16
TIMESERIES_MAX_BUCKETS = 1024
_SHIFT = 32  # histogram key = replica << 32 | value
#: a replica's float terms are summed FLOAT_BLOCK rows at a time, in start order: the sums
#: then depend on the replica's rows alone, not on the chunks the log folded them in
FLOAT_BLOCK = 256
#: the float aggregates, in the column order of ``BatchSummary._fsum`` and ``carry``'s terms
FLOAT_SUMS = ("w_sum", "kv_w", "flops", "nbytes")


def choose_batch_log(mode: str, num_requests: int, *, pp: int, chrome_trace: bool) -> tuple[str, str]:
    """``(full | summary, why)`` for ``metrics.batch_log``; an explicit ``summary``
    that cannot work (pipeline stages, Chrome trace) is refused in one line."""
    if mode not in BATCH_LOG_MODES:
        raise VidurError(f"metrics.batch_log must be one of {', '.join(BATCH_LOG_MODES)}, got {mode!r}")
    needs = "pipeline_parallel > 1 (stage spans)" if pp > 1 else "metrics.chrome_trace" if chrome_trace else None
    if mode == "summary":
        if needs is not None:
            raise VidurError(
                f"metrics.batch_log: summary cannot serve {needs}, which needs every batch row; "
                "set metrics.batch_log: full (or auto)"
            )
        return "summary", "metrics.batch_log: summary"
    if mode == "full":
        return "full", "metrics.batch_log: full"
    if needs is not None:
        return "full", f"auto: {needs} needs every batch row"
    if num_requests > AUTO_FULL_MAX_REQUESTS:
        return "summary", f"auto: {num_requests:,} requests > {AUTO_FULL_MAX_REQUESTS:,}"
    return "full", f"auto: {num_requests:,} requests <= {AUTO_FULL_MAX_REQUESTS:,}"


def hist_percentile(values: np.ndarray, counts: np.ndarray, q) -> np.ndarray:
    """Percentiles ``q`` (0..100) of the sample where sorted ``values[i]`` occurs
    ``counts[i] > 0`` times, bit for bit what ``np.percentile(sample, q)`` (linear)
    gives: virtual index (n - 1) * q / 100, then numpy's ``_lerp``."""
    v = np.asarray(values, dtype=np.float64)
    cum = np.cumsum(np.asarray(counts, dtype=np.int64))
    n = int(cum[-1])
    quant = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    vi = (n - 1) * quant
    prev = np.floor(vi)
    gamma = vi - prev
    lo = prev.astype(np.int64)
    top = vi >= n - 1
    lo = np.where(top, n - 1, lo)
    hi = np.where(top, n - 1, lo + 1)
    a = v[np.searchsorted(cum, lo, side="right")]
    b = v[np.searchsorted(cum, hi, side="right")]
    diff = b - a
    res = a + diff * gamma
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), res)


class _Hist:
    """Sparse counts keyed by ``replica << 32 | value`` (sorted unique keys)."""

    __slots__ = ("keys", "counts")

    def __init__(self):
        self.keys = np.empty(0, np.int64)
        self.counts = np.empty(0, np.int64)

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` at sorted unique ``keys``."""
        if not self.keys.size:
            self.keys, self.counts = keys.copy(), counts.astype(np.int64)
            return
        idx = np.searchsorted(self.keys, keys)
        hit = idx < self.keys.size
        hit[hit] = self.keys[idx[hit]] == keys[hit]
        self.counts[idx[hit]] += counts[hit]
        new = ~hit
        if new.any():
            self.keys = np.insert(self.keys, idx[new], keys[new])
            self.counts = np.insert(self.counts, idx[new], counts[new])

    def add_values(self, rep: np.ndarray, values: np.ndarray) -> None:
        u, c = np.unique((rep << _SHIFT) | values, return_counts=True)
        self.add(u, c)

    def of(self, replica: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) of one replica, values ascending."""
        lo, hi = np.searchsorted(self.keys, [replica << _SHIFT, (replica + 1) << _SHIFT])
        return self.keys[lo:hi] & ((1 << _SHIFT) - 1), self.counts[lo:hi]


def _grow(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` padded with zeros along axis 0 to at least ``n`` rows."""
    if a.shape[0] >= n:
        return a
    return np.concatenate([a, np.zeros((n - a.shape[0],) + a.shape[1:], a.dtype)])


def _hash(start: np.ndarray, rep: np.ndarray) -> np.ndarray:
    """splitmix64 of (start's bits, replica): uniform bits fixed by the row alone."""
    x = np.ascontiguousarray(start, np.float64).view(np.uint64) ^ (rep.astype(np.uint64) << np.uint64(48))
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


#: time-series columns (integers per replica and bucket); ``kv_max`` combines by max, the rest add
TS_COLUMNS = ("busy_ns", "batches", "seqs", "prefill_tokens", "decode_tokens", "kv_sum", "kv_max")


class TimeSeries:
    """Per-replica integer counters per time bucket of :meth:`width_s` seconds.

    ``busy_ns``: nanoseconds of batch time in the bucket (each batch's span,
    rounded to the nanosecond, split across the buckets it crosses); the
    other counters add each batch to the bucket its start falls in:
    ``batches``, ``seqs`` (Σ batch size), ``prefill_tokens``,
    ``decode_tokens``, ``kv_sum`` (Σ kv_blocks_used) and ``kv_max``."""

    __slots__ = ("shift", "data")

    def __init__(self):
        self.shift = 0  # bucket width = TIMESERIES_BASE_S * 2**shift
        self.data = np.zeros((len(TS_COLUMNS), 0, 0), np.int64)  # (column, replica, bucket)

    def width_ns(self) -> int:
        return int(round(TIMESERIES_BASE_S * 1e9)) << self.shift

    def width_s(self) -> float:
        """Bucket width in seconds."""
        return TIMESERIES_BASE_S * (1 << self.shift)

    def coarsen(self, shift: int) -> None:
        """Widen buckets to ``TIMESERIES_BASE_S * 2**shift`` (exact: integer sums, max)."""
        while self.shift < shift:
            d = self.data
            if d.size == 0:
                self.data = np.zeros(d.shape[:2] + ((d.shape[2] + 1) // 2,), np.int64)
                self.shift += 1
                continue
            if d.shape[2] % 2:
                d = np.concatenate([d, np.zeros(d.shape[:2] + (1,), np.int64)], axis=2)
            d = d.reshape(d.shape[0], d.shape[1], -1, 2)
            kvm = TS_COLUMNS.index("kv_max")
            out = d.sum(axis=3)
            out[kvm] = d[kvm].max(axis=2)
            self.data = out
            self.shift += 1

    def _fit(self, nrep: int, last_ns: int) -> None:
        shift = self.shift
        while last_ns // (int(round(TIMESERIES_BASE_S * 1e9)) << shift) >= TIMESERIES_MAX_BUCKETS:
            shift += 1
        self.coarsen(shift)
        need_b = last_ns // self.width_ns() + 1
        c, r, b = self.data.shape
        if r < nrep or b < need_b:
            nb = max(b, min(TIMESERIES_MAX_BUCKETS, max(need_b, 2 * b)))
            d = np.zeros((c, max(r, nrep), nb), np.int64)
            d[:, :r, :b] = self.data
            self.data = d

    def fold(self, rep, start, end, seqs, pt, nd, kv) -> None:
        s_ns = np.rint(start * 1e9).astype(np.int64)
        e_ns = np.maximum(np.rint(end * 1e9).astype(np.int64), s_ns)
        self._fit(int(rep.max()) + 1, int(e_ns.max()))
        w = self.width_ns()
        nb = self.data.shape[2]
        b0, b1 = s_ns // w, e_ns // w
        base = rep * nb
        f0 = base + b0
        size = self.data.shape[1] * nb
        col = TS_COLUMNS.index
        flat = self.data.reshape(len(TS_COLUMNS), size)
        for name, vals in (("batches", None), ("seqs", seqs), ("prefill_tokens", pt),
                           ("decode_tokens", nd), ("kv_sum", kv)):
            add = np.bincount(f0, weights=vals, minlength=size)  # float64: exact for integer sums < 2**53
            flat[col(name)] += add.astype(np.int64)
        np.maximum.at(flat[col("kv_max")], f0, kv)
        busy = flat[col("busy_ns")]
        same = b0 == b1
        np.add.at(busy, f0[same], (e_ns - s_ns)[same])
        cross = ~same
        if cross.any():
            cb0, cb1, cs, ce, cbase = b0[cross], b1[cross], s_ns[cross], e_ns[cross], base[cross]
            np.add.at(busy, cbase + cb0, (cb0 + 1) * w - cs)
            np.add.at(busy, cbase + cb1, ce - cb1 * w)
            mid = cb1 - cb0 - 1
            m = mid > 0
            if m.any():
                first = np.repeat(cbase[m] + cb0[m] + 1, mid[m])
                off = np.arange(first.size) - np.repeat(np.cumsum(mid[m]) - mid[m], mid[m])
                np.add.at(busy, first + off, w)

    def merge(self, other: "TimeSeries") -> None:
        """Add ``other`` (another replica set) into this one."""
        shift = max(self.shift, other.shift)
        self.coarsen(shift)
        o = TimeSeries()
        o.shift, o.data = other.shift, other.data.copy()
        o.coarsen(shift)
        c = len(TS_COLUMNS)
        r = max(self.data.shape[1], o.data.shape[1])
        b = max(self.data.shape[2], o.data.shape[2])
        out = np.zeros((c, r, b), np.int64)
        for d in (self.data, o.data):
            part = np.zeros_like(out)
            part[:, : d.shape[1], : d.shape[2]] = d
            kvm = TS_COLUMNS.index("kv_max")
            keep = out[kvm].copy()
            out += part
            out[kvm] = np.maximum(keep, part[kvm])
        self.data = out

    def columns(self, nrep: int | None = None) -> dict[str, np.ndarray]:
        """Long table: one row per (replica, bucket) up to the last bucket with a batch."""
        d = self.data
        r = d.shape[1] if nrep is None else nrep
        d = d[:, :r] if d.shape[1] >= r else np.concatenate([d, np.zeros((d.shape[0], r - d.shape[1], d.shape[2]), np.int64)], axis=1)
        used = np.flatnonzero(d[TS_COLUMNS.index("batches")].any(axis=0) | d[0].any(axis=0))
        nb = int(used[-1]) + 1 if used.size else 0
        d = d[:, :, :nb]
        w = self.width_s()
        out = {
            "replica": np.repeat(np.arange(r, dtype=np.int64), nb),
            "t_start": np.tile(np.arange(nb, dtype=np.float64) * w, r),
        }
        for i, name in enumerate(TS_COLUMNS):
            out[name] = d[i].reshape(-1)
        return out


class BatchSummary:
    """Per-replica aggregates of a run's batches (see the module docstring).

    Built by the engine with the run's cost functions (``cost(columns) ->
    (flops, bytes)`` per row, summed over the replica's GPUs; None: no
    MFU/MBU); :meth:`fold` takes packed rows in ``BATCH_COLUMNS`` order.
    ``done_until`` is the latest request completion so far (the engine sets
    it); batches ending after it are pending until a later completion.
    """

    def __init__(self, cost: Callable[[dict], tuple] | None = None):
        self.cost = cost
        self.done_until = -np.inf
        z = lambda dt: np.zeros(0, dt)  # noqa: E731
        self.n, self.seqs_sum, self.tok_sum = z(np.int64), z(np.int64), z(np.int64)
        self.prefill_sum, self.decode_sum = z(np.int64), z(np.int64)
        self.kv_sum, self.kv_max = z(np.int64), np.full(0, -1, np.int64)
        self._fsum = np.zeros((0, len(FLOAT_SUMS)))  # per replica: whole FLOAT_BLOCKs summed so far
        self.carry = np.zeros((0, 2 + len(FLOAT_SUMS)))  # (replica, start, terms...) of rows not in a whole block
        self._settled: np.ndarray | None = None  # _fsum plus the carry's partial blocks (cached until a fold)
        self.seqs_hist, self.tok_hist = _Hist(), _Hist()
        self.pending = np.zeros((0, 3))  # (replica, start, end) of batches ending after done_until
        self.min_start = np.inf
        self.sample = np.zeros((0, NCOL))
        self.sample_hash = np.zeros(0, np.uint64)
        self.sample_bits = z(np.int64)  # per replica: rows kept have their hash's low bits zero
        self.series = TimeSeries()

    # -- folding -------------------------------------------------------------
    def _fit(self, nrep: int) -> None:
        if self.n.size >= nrep:
            return
        for name in ("n", "seqs_sum", "tok_sum", "prefill_sum", "decode_sum", "kv_sum", "_fsum", "sample_bits"):
            setattr(self, name, _grow(getattr(self, name), nrep))
        self._settled = None
        old = self.kv_max.size
        self.kv_max = np.concatenate([self.kv_max, np.full(nrep - old, -1, np.int64)])

    def fold(self, rows: np.ndarray) -> None:
        """Add rows (``(k, len(BATCH_COLUMNS))`` float64) to the aggregates."""
        if not len(rows):
            return
        rep = rows[:, C_REP].astype(np.int64)
        start, end = rows[:, C_START], rows[:, C_END]
        nrep = int(rep.max()) + 1
        self._fit(nrep)
        seqs = rows[:, C_SEQS].astype(np.int64)
        pt = rows[:, C_PT].astype(np.int64)
        nd = rows[:, C_ND].astype(np.int64)
        kv = rows[:, C_KV].astype(np.int64)
        tok = pt + nd

        def per(weights=None, dtype=np.int64):
            s = np.bincount(rep, weights=weights, minlength=nrep)
            return s.astype(dtype) if dtype is np.int64 else s

        self.n[:nrep] += per()
        self.seqs_sum[:nrep] += per(seqs)
        self.tok_sum[:nrep] += per(tok)
        self.prefill_sum[:nrep] += per(pt)
        self.decode_sum[:nrep] += per(nd)
        self.kv_sum[:nrep] += per(kv)
        np.maximum.at(self.kv_max, rep, kv)
        w = np.maximum(end - start, 0.0)
        terms = np.zeros((len(rows), len(FLOAT_SUMS)))
        terms[:, 0] = w
        terms[:, 1] = kv * w
        if self.cost is not None:
            cols = {c: rows[:, i] for i, c in enumerate(BATCH_COLUMNS)}
            f, b = self.cost(cols)
            terms[:, 2] = np.asarray(f, dtype=np.float64)
            terms[:, 3] = np.asarray(b, dtype=np.float64)
        self._fold_floats(rep, start, terms)
        self.seqs_hist.add_values(rep, seqs)
        self.tok_hist.add_values(rep, tok)
        self.min_start = min(self.min_start, float(start.min()))
        self._fold_busy(np.column_stack([rows[:, C_REP], start, end]))
        self._fold_sample(rows, rep)
        self.series.fold(rep, start, end, seqs, pt, nd, kv)

    def _fold_floats(self, rep: np.ndarray, start: np.ndarray, terms: np.ndarray) -> None:
        """Add each replica's whole FLOAT_BLOCKs of rows (in start order, the carry's first) to
        ``_fsum``, one block at a time; keep the rest in ``carry``."""
        c = self.carry
        allrep = np.concatenate([c[:, 0].astype(np.int64), rep])
        allstart = np.concatenate([c[:, 1], start])
        allterms = np.concatenate([c[:, 2:], terms])
        order = np.lexsort((allstart, allrep))
        allrep, allstart, allterms = allrep[order], allstart[order], allterms[order]
        counts = np.bincount(allrep, minlength=self._fsum.shape[0])
        rank = np.arange(len(allrep)) - (np.cumsum(counts) - counts)[allrep]
        whole = counts // FLOAT_BLOCK * FLOAT_BLOCK
        done = rank < whole[allrep]
        self.carry = np.column_stack([allrep[~done], allstart[~done], allterms[~done]])
        self._settled = None
        if done.any():
            self._add_blocks(self._fsum, allrep[done], rank[done] // FLOAT_BLOCK, allterms[done])

    @staticmethod
    def _add_blocks(acc: np.ndarray, rep: np.ndarray, block: np.ndarray, terms: np.ndarray) -> None:
        """``acc[r] += sum of block b`` for each replica's blocks in order (each block summed from zero)."""
        nrep, nb = acc.shape[0], int(block.max()) + 1
        key = rep * nb + block
        present = np.bincount(key, minlength=nrep * nb).reshape(nrep, nb) > 0
        for j in range(terms.shape[1]):
            sums = np.bincount(key, weights=terms[:, j], minlength=nrep * nb).reshape(nrep, nb)
            for b in range(nb):
                has = present[:, b]
                acc[has, j] += sums[has, b]

    def _float_sums(self) -> np.ndarray:
        """``_fsum`` with each replica's last partial block (the carry) added: what the reads see."""
        if self._settled is None:
            out = self._fsum.copy()
            if len(self.carry):
                c = self.carry
                r = c[:, 0].astype(np.int64)
                order = np.lexsort((c[:, 1], r))
                self._add_blocks(out, r[order], np.zeros(len(r), np.int64), c[order, 2:])
            self._settled = out
        return self._settled

    @property
    def w_sum(self) -> np.ndarray:
        """Per replica: Σ batch duration (seconds)."""
        return self._float_sums()[:, 0]

    @property
    def kv_w(self) -> np.ndarray:
        """Per replica: Σ KV blocks used x batch duration."""
        return self._float_sums()[:, 1]

    @property
    def flops(self) -> np.ndarray:
        """Per replica: Σ FLOPs (the cost function's; zeros without one)."""
        return self._float_sums()[:, 2]

    @property
    def nbytes(self) -> np.ndarray:
        """Per replica: Σ bytes moved (the cost function's; zeros without one)."""
        return self._float_sums()[:, 3]

    def commit(self) -> None:
        """Drop pending batches that end by ``done_until`` (the loop's latest completion):
        the window cannot end before it, so they need no clipping."""
        self._fold_busy(np.zeros((0, 3)))

    def _fold_busy(self, spans: np.ndarray) -> None:
        p = np.concatenate([self.pending, spans]) if len(self.pending) else spans
        self.pending = p[p[:, 2] > self.done_until]

    def _fold_sample(self, rows: np.ndarray, rep: np.ndarray) -> None:
        h = _hash(rows[:, C_START], rep)
        mask = (np.uint64(1) << self.sample_bits[rep].astype(np.uint64)) - np.uint64(1)
        keep = (h & mask) == 0
        if not keep.any():
            return
        self.sample = np.concatenate([self.sample, rows[keep]])
        self.sample_hash = np.concatenate([self.sample_hash, h[keep]])
        self._thin()

    def _thin(self) -> None:
        srep = self.sample[:, C_REP].astype(np.int64)
        while True:
            over = np.bincount(srep, minlength=self.sample_bits.size) > SAMPLE_PER_REPLICA
            if not over.any():
                return
            self.sample_bits[over] += 1
            mask = (np.uint64(1) << self.sample_bits[srep].astype(np.uint64)) - np.uint64(1)
            keep = (self.sample_hash & mask) == 0
            self.sample, self.sample_hash, srep = self.sample[keep], self.sample_hash[keep], srep[keep]

    # -- reading -------------------------------------------------------------
    @property
    def num_batches(self) -> int:
        return int(self.n.sum())

    def replicas(self) -> list[int]:
        """Replica indices with at least one batch."""
        return np.flatnonzero(self.n).tolist()

    def busy_seconds(self, replica: int, t0: float, t1: float) -> float:
        """Length of the replica's batch spans clipped to the window ``[t0, t1]``."""
        if not (np.isfinite(t0) and np.isfinite(t1)):
            return float("nan")
        if self.min_start < t0:
            raise VidurError(
                f"a batch started at {self.min_start} s, before the window's start {t0} s: "
                "the summarised batch log cannot clip it; run with metrics.batch_log: full"
            )
        whole = self.w_sum
        total = float(whole[replica]) if replica < whole.size else 0.0
        p = self.pending[self.pending[:, 0] == replica]
        if not len(p):
            return total
        p = p[np.argsort(p[:, 1], kind="stable")]
        s = np.clip(p[:, 1], t0, t1)
        e = np.maximum(np.clip(p[:, 2], t0, t1), s)
        cut = np.maximum(p[:, 2] - p[:, 1], 0.0) - (e - s)  # what clipping takes off each pending batch
        cut = cut[cut != 0]  # only batches that cross the window's end (the same in one process or many)
        return total - float(np.sum(cut)) if len(cut) else total

    def sample_columns(self) -> dict[str, np.ndarray]:
        """The sampled rows as columns, sorted by (replica, start)."""
        s = self.sample
        order = np.lexsort((s[:, C_START], s[:, C_REP]))
        s = s[order]
        return {c: (s[:, i] if c in ("start", "end", "prefill_work") else s[:, i].astype(np.int64))
                for i, c in enumerate(BATCH_COLUMNS)}

    def histogram_columns(self) -> dict[str, np.ndarray]:
        """Long table (replica, metric, value, count) of both histograms."""
        parts = []
        for name, h in (("batch_size", self.seqs_hist), ("tokens_per_batch", self.tok_hist)):
            parts.append((name, h.keys >> _SHIFT, h.keys & ((1 << _SHIFT) - 1), h.counts))
        return {
            "replica": np.concatenate([p[1] for p in parts]),
            "metric": np.concatenate([np.full(len(p[1]), p[0]) for p in parts]).astype("U16"),
            "value": np.concatenate([p[2] for p in parts]),
            "count": np.concatenate([p[3] for p in parts]),
        }


def merge_batch_summaries(parts: Iterable[BatchSummary]) -> BatchSummary:
    """One :class:`BatchSummary` from summaries of disjoint replica sets (e.g. the
    worker processes of a run split by replica). A replica with batches in two
    parts is refused: its aggregates would not be a union."""
    parts = list(parts)
    out = BatchSummary(parts[0].cost if parts else None)
    for p in parts:
        both = np.flatnonzero(out.n[: p.n.size] * p.n[: out.n.size] > 0) if out.n.size and p.n.size else []
        if len(both):
            raise VidurError(f"batch summaries overlap on replica {int(both[0])}: merge disjoint replica sets only")
        out._fit(p.n.size)
        m = p.n.size
        for name in ("n", "seqs_sum", "tok_sum", "prefill_sum", "decode_sum", "kv_sum"):
            getattr(out, name)[:m] += getattr(p, name)
        out._fsum[:m] += p._float_sums()[:m]  # disjoint replicas: 0 + x, the part's own bits
        out._settled = None
        out.kv_max[:m] = np.maximum(out.kv_max[:m], p.kv_max)
        out.sample_bits[:m] = np.maximum(out.sample_bits[:m], p.sample_bits)
        for attr in ("seqs_hist", "tok_hist"):
            h = getattr(p, attr)
            getattr(out, attr).add(h.keys, h.counts)
        out.pending = np.concatenate([out.pending, p.pending])
        out.min_start = min(out.min_start, p.min_start)
        out.sample = np.concatenate([out.sample, p.sample])
        out.sample_hash = np.concatenate([out.sample_hash, p.sample_hash])
        out.series.merge(p.series)
        out.done_until = max(out.done_until, p.done_until)
    return out
