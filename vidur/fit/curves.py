"""Fitting a profile: piecewise-linear interpolation tables.

Every operator's measured medians become the knots of an interpolation
table; where the timings are noisy (CPU profiles), attention and
host-overhead curves are first smoothed with isotonic regression (time
never falls when the work grows), token-level curves by a narrow
local-linear fit (their kernels' times are not monotone in the token
count). Token-level and host curves interpolate in log-log space, a local
power law, exact for the regimes that matter (flat when latency- or
weight-bound, proportional when compute- or bandwidth-bound). Attention
interpolates affinely in its work (a fixed cost plus a cost per key read or
query×key pair), which predicted left-out points and rows better than the
power law on every profile we have. Beyond the last knot a curve continues
with a fixed log-log slope (1: proportional), below the first it stays
flat; the estimator warns when it extrapolates.

- token-level operators: one curve over ``num_tokens``;
- prefill attention: one curve per profiled chunk length ``q`` over the KV
  length ``context + q``, linear between the profiled contexts; between
  chunk lengths the time is affine in the causal work at equal context
  (:class:`RowTable`); batches of ``n`` chunks
  scale by a measured batching factor. Chunks with no cached context have
  a curve over ``q`` of their own (another kernel runs them). Where the
  measurements show that an odd KV length (``context + q``) is consistently
  slower (SDPA's masked kernel reads odd-length bf16 rows unaligned: 1.1-1.7x
  on an H200), the curves are fitted to even lengths and a second table holds
  the odd/even ratio (see :func:`_parity_split`);
- decode attention: one curve per batch size over ``context + 1``, linear
  between the profiled contexts (an affine cost of the KV read), and
  affine in the batch between profiled batch sizes;
- CPU overheads: one curve over the number of sequences.

The fitted model is plain JSON (lists of floats) and evaluating it needs
only numpy. Fitting uses scikit-learn's ``IsotonicRegression`` when it is
installed and an equivalent numpy pool-adjacent-violators otherwise.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vidur.errors import VidurError
from vidur.store.profiles import (
    CPU_OPS,
    EDGE_OPS,
    FIT_FILE,
    LAYER_TOKEN_OPS,
    Profile,
    ShardData,
)

FIT_FORMAT = "vidur-fit/5"  # 2: fresh chunks, odd KV lengths; 3: rows affine in work; 4-5: linear in KV
FIT_CACHE_ENV = "VIDUR_CACHE_DIR"
MS = 1e-3

#: median relative spread of repeats above which ``smooth="auto"`` makes a curve monotone
NOISE_THRESHOLD = 0.05

#: median |log(odd / even)| of prefill attention above which odd KV lengths get their own factor
PARITY_THRESHOLD = 0.05

#: log-log slope past the last knot, per operator (default 1: proportional)
HI_SLOPE = {"cpu_launch_layer": 0.0, "cpu_graph_replay": 0.0}


# --- isotonic regression ------------------------------------------------------


def pava(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Non-decreasing least-squares fit of ``y`` (pool adjacent violators), numpy only."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n == 0:
        return y.copy()
    w = np.ones(n) if w is None else np.asarray(w, dtype=float)
    vals: list[float] = []
    wts: list[float] = []
    cnt: list[int] = []
    for i in range(n):
        v, ww, c = y[i], w[i], 1
        while vals and vals[-1] > v:
            pv, pw, pc = vals.pop(), wts.pop(), cnt.pop()
            v = (pv * pw + v * ww) / (pw + ww)
            ww += pw
            c += pc
        vals.append(v)
        wts.append(ww)
        cnt.append(c)
    return np.repeat(np.array(vals), np.array(cnt))


def isotonic(y: np.ndarray, w: np.ndarray | None = None, backend: str = "numpy") -> np.ndarray:
    """Non-decreasing fit of ``y`` in the given order.

    ``backend="sklearn"`` uses scikit-learn's ``IsotonicRegression`` (falling
    back to numpy when it is not installed); ``"numpy"`` uses :func:`pava`.
    Both give the same fit; numpy avoids importing scikit-learn (~1.5 s) when
    an estimator fits a profile on the fly.
    """
    y = np.asarray(y, dtype=float)
    if len(y) < 2 or backend == "numpy":
        return pava(y, w) if len(y) >= 2 else y.copy()
    try:
        from sklearn.isotonic import IsotonicRegression
    except ImportError:  # pragma: no cover - exercised where sklearn is absent
        return pava(y, w)
    x = np.arange(len(y), dtype=float)
    return IsotonicRegression(increasing=True).fit(x, y, sample_weight=w).predict(x)


#: bandwidth (in natural-log size) of the local-linear smoothing of noisy token-level curves
LOCAL_BANDWIDTH = 0.1


def local_linear(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, h: float = LOCAL_BANDWIDTH) -> np.ndarray:
    """Each ``y[i]`` replaced by a weighted linear fit at ``x[i]`` (Gaussian kernel of width ``h``)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    base = np.ones(len(x)) if w is None else np.asarray(w, dtype=float)
    out = y.copy()
    for i in range(len(x)):
        k = base * np.exp(-0.5 * ((x - x[i]) / h) ** 2)
        k[k < 1e-6] = 0.0
        sw = k.sum()
        mx = (k * x).sum() / sw
        my = (k * y).sum() / sw
        var = (k * (x - mx) ** 2).sum()
        slope = (k * (x - mx) * (y - my)).sum() / var if var > 1e-12 else 0.0
        out[i] = my + slope * (x[i] - mx)
    return out


# --- curves -------------------------------------------------------------------


class Curve:
    """A piecewise-linear function through knots, in log-log space or in natural units.

    ``xs``/``ys`` are the knots (natural logs of size and of seconds).
    Below the first knot the value is flat; past the last it grows with
    log-log slope ``hi_slope``. Between knots, ``interp="log"`` is a local
    power law; ``"linear"`` is linear in size and seconds themselves (an
    affine cost between two measured sizes: what attention costs along its
    context, see :class:`RowTable`).
    """

    __slots__ = ("xs", "ys", "hi_slope", "interp", "_xl", "_yl", "_xn", "_yn", "x_min", "x_max")

    def __init__(self, xs, ys, hi_slope: float = 1.0, interp: str = "log"):
        self.xs = np.asarray(xs, dtype=float)
        self.ys = np.asarray(ys, dtype=float)
        if len(self.xs) == 0 or len(self.xs) != len(self.ys):
            raise VidurError("a fitted curve needs at least one knot")
        if interp not in ("log", "linear"):
            raise VidurError(f"unknown curve interpolation {interp!r}")
        self.hi_slope = float(hi_slope)
        self.interp = interp
        self._xl = self.xs.tolist()
        self._yl = self.ys.tolist()
        self._xn = np.exp(self.xs).tolist()
        self._yn = np.exp(self.ys).tolist()
        self.x_min = self._xl[0]
        self.x_max = self._xl[-1]

    def linear(self) -> "Curve":
        """The same knots, interpolated linearly in natural units."""
        return Curve(self.xs, self.ys, self.hi_slope, "linear")

    @classmethod
    def fit(cls, sizes, times, hi_slope: float = 1.0, backend: str = "numpy", smooth: bool | str = True) -> "Curve":
        """Fit to measured ``times`` (seconds) at ``sizes`` (> 0).

        ``smooth``: True makes the knots monotone (isotonic regression);
        ``"local"`` replaces each knot by a local linear fit in log-log space
        over its neighbours within about ±:data:`LOCAL_BANDWIDTH` (Gaussian
        weights): it averages out noise where sizes are dense and keeps
        features narrower than that (a slow 3-row GEMM between 2 and 4 rows);
        False keeps the measured medians themselves.
        """
        sizes = np.asarray(sizes, dtype=float)
        times = np.asarray(times, dtype=float)
        ok = (sizes > 0) & (times > 0)
        sizes, times = sizes[ok], times[ok]
        if len(sizes) == 0:
            raise VidurError("no valid measurements to fit")
        lx, ly = np.log(sizes), np.log(times)
        order = np.argsort(lx, kind="stable")
        lx, ly = lx[order], ly[order]
        ux, start, counts = np.unique(lx, return_index=True, return_counts=True)
        if len(ux) == len(lx):
            uy, w = ly, None
        else:  # duplicates: median of the repeats, weighted by their count
            uy = np.array([np.median(ly[s : s + c]) for s, c in zip(start, counts)])
            w = counts.astype(float)
        if smooth == "local":
            return cls(ux, local_linear(ux, uy, w), hi_slope)
        return cls(ux, isotonic(uy, w, backend) if smooth else uy, hi_slope)

    def log_eval(self, lx: float) -> float:
        """log(time) at log(size) ``lx`` (scalar, pure Python: fast in hot loops)."""
        xs = self._xl
        if lx <= self.x_min:
            return self._yl[0]
        if lx >= self.x_max:
            return self._yl[-1] + self.hi_slope * (lx - self.x_max)
        i = bisect.bisect_right(xs, lx)
        if self.interp == "linear":
            x, x0, x1 = math.exp(lx), self._xn[i - 1], self._xn[i]
            t0 = self._yn[i - 1]
            return math.log(t0 + (self._yn[i] - t0) * (x - x0) / (x1 - x0))
        x0, x1 = xs[i - 1], xs[i]
        y0, y1 = self._yl[i - 1], self._yl[i]
        return y0 + (y1 - y0) * (lx - x0) / (x1 - x0)

    def __call__(self, size: float) -> float:
        """Time (seconds) at ``size``."""
        return math.exp(self.log_eval(math.log(size)))

    def value(self, x: float) -> float:
        """Time (seconds) at size ``x`` > 0 without going through logs where it can (linear curves)."""
        xs = self._xn
        if x <= xs[0]:
            return self._yn[0]
        if x >= xs[-1]:
            h = self.hi_slope
            return self._yn[-1] * (x / xs[-1] if h == 1.0 else (x / xs[-1]) ** h)
        if self.interp != "linear":
            return math.exp(self.log_eval(math.log(x)))
        i = bisect.bisect_right(xs, x)
        x0 = xs[i - 1]
        t0 = self._yn[i - 1]
        return t0 + (self._yn[i] - t0) * (x - x0) / (xs[i] - x0)

    def log_eval_array(self, lx: np.ndarray) -> np.ndarray:
        lx = np.asarray(lx, dtype=float)
        if self.interp == "linear":
            out = np.log(np.interp(np.exp(lx), np.exp(self.xs), np.exp(self.ys)))
        else:
            out = np.interp(lx, self.xs, self.ys)
        hi = lx > self.x_max
        if hi.any():
            out[hi] = self.ys[-1] + self.hi_slope * (lx[hi] - self.x_max)
        return out

    def eval_array(self, sizes: np.ndarray) -> np.ndarray:
        """Vectorised times (seconds) at ``sizes`` (> 0)."""
        return np.exp(self.log_eval_array(np.log(np.asarray(sizes, dtype=float))))

    @property
    def size_range(self) -> tuple[float, float]:
        return math.exp(self.x_min), math.exp(self.x_max)

    def to_json(self) -> dict:
        d = {"x": [round(v, 7) for v in self._xl], "y": [round(v, 7) for v in self._yl], "hi_slope": self.hi_slope}
        if self.interp != "log":
            d["interp"] = self.interp
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Curve":
        return cls(d["x"], d["y"], d.get("hi_slope", 1.0), d.get("interp", "log"))


class RowTable:
    """Curves along one axis (``x``), one per value of a second axis (a row key).

    A query between two rows evaluates both rows at the same ``context``
    (each row's own ``x = context + offset(row)``). ``offset`` is ``"row"``
    (prefill: x is the KV length ``context + q``) or a constant (decode:
    ``context + 1``). ``across`` says how the two rows combine:

    - ``"work"`` (attention tables): the time is affine in the attention
      work between the rows, ``row · (context + (row+1)/2)`` query×key pairs
      for prefill and ``row · (context + offset)`` KV reads for decode, i.e.
      fixed cost plus cost per unit of work, which is what a kernel does
      between two sizes. Leaving one profiled row out
      (:func:`row_holdout_mape`), it predicts the row with 4.3 % mean error
      on the H200 prefill measurements (linear in log q: 7.8 %) and 3.7 %
      on decode (4.7 %); on the CPU profile, prefill 6.7-8.2 % (12.8-13.0 %);
    - ``"log"`` (ratio tables): ``log`` values linear in ``log row``.
    """

    __slots__ = ("rows", "curves", "offset", "across", "_lr", "_rl", "_brackets")

    def __init__(self, rows, curves: list[Curve], offset: Any, across: str = "log"):
        order = np.argsort(np.asarray(rows, dtype=float))
        self.rows = [float(rows[i]) for i in order]
        self.curves = [curves[i] for i in order]
        self.offset = offset
        if across not in ("log", "work"):
            raise VidurError(f"unknown row interpolation {across!r}")
        self.across = across
        self._lr = [math.log(r) for r in self.rows]
        self._rl = self.rows
        self._brackets: dict[float, int] = {}  # row -> :meth:`_bracket` (rows repeat: chunk sizes, batch sizes)

    def _off(self, row: float) -> float:
        return row if self.offset == "row" else float(self.offset)

    def _row_log_eval(self, i: int, context: float) -> float:
        r = self._rl[i]
        return self.curves[i].log_eval(math.log(context + self._off(r)))

    def _bracket(self, row: float) -> int:
        """0 / len(rows): below the first / above the last row; else the index of the upper row (memoised)."""
        i = self._brackets.get(row)
        if i is None:
            lr = math.log(row)
            rows = self._lr
            i = 0 if lr <= rows[0] else len(rows) if lr >= rows[-1] else bisect.bisect_right(rows, lr)
            if len(self._brackets) < 100_000:
                self._brackets[row] = i
        return i

    def eval(self, row: float, context: float) -> float:
        """The value (seconds for attention tables) at ``row`` and ``context``: ``exp`` of :meth:`log_eval`."""
        i = self._brackets.get(row)
        if i is None:
            i = self._bracket(row)
        rows = self._rl
        prefill = self.offset == "row"
        if i == 0 or i == len(rows):
            k = 0 if i == 0 else i - 1
            return self.curves[k].value(context + (rows[k] if prefill else float(self.offset)))
        if self.across != "work":
            return math.exp(self.log_eval(row, context))
        r0, r1 = rows[i - 1], rows[i]
        if prefill:  # x is the KV length; rows combine affinely in the causal query×key pairs
            t0 = self.curves[i - 1].value(context + r0)
            t1 = self.curves[i].value(context + r1)
            w0 = r0 * (context + (r0 + 1) / 2)
            return t0 + (t1 - t0) * ((row * (context + (row + 1) / 2) - w0) / (r1 * (context + (r1 + 1) / 2) - w0))
        x = context + float(self.offset)  # decode: affine in the batch at equal context
        t0 = self.curves[i - 1].value(x)
        return t0 + (self.curves[i].value(x) - t0) * ((row - r0) / (r1 - r0))

    def log_eval(self, row: float, context: float) -> float:
        i = self._bracket(row)
        if i == 0:
            return self._row_log_eval(0, context)
        if i == len(self.rows):
            return self._row_log_eval(i - 1, context)
        if self.across == "work":
            return math.log(self.eval(row, context))
        y0 = self._row_log_eval(i - 1, context)
        y1 = self._row_log_eval(i, context)
        return y0 + (y1 - y0) * (math.log(row) - self._lr[i - 1]) / (self._lr[i] - self._lr[i - 1])

    @property
    def row_range(self) -> tuple[float, float]:
        return self.rows[0], self.rows[-1]

    def context_max(self) -> float:
        return min(math.exp(c.x_max) - self._off(r) for r, c in zip(self.rows, self.curves))

    def to_json(self) -> dict:
        return {"rows": self.rows, "offset": self.offset, "across": self.across, "curves": [c.to_json() for c in self.curves]}

    @classmethod
    def from_json(cls, d: dict) -> "RowTable":
        return cls(d["rows"], [Curve.from_json(c) for c in d["curves"]], d["offset"], d.get("across", "log"))


# --- one shard --------------------------------------------------------------


class FittedShard:
    """Fitted curves of one tensor-parallel shard (``prefill``/``decode`` are None when the
    profile has no attention measurements, e.g. an imported ``mlp.csv`` alone)."""

    def __init__(
        self,
        tp: int,
        token: dict[str, Curve],
        prefill: RowTable | None,
        decode: RowTable | None,
        prefill_batch: RowTable | None,
        cpu: dict[str, Curve],
        prefill_odd: RowTable | None = None,
        prefill_fresh: Curve | None = None,
    ):
        self.tp = tp
        self.token = token
        self.prefill = prefill
        self.decode = decode
        self.prefill_batch = prefill_batch
        self.cpu = cpu
        #: log(odd / even) prefill time by KV-length parity (None: parity does not matter)
        self.prefill_odd = prefill_odd
        #: one chunk with no cached context, over q (None: priced by :attr:`prefill` at context 0)
        self.prefill_fresh = prefill_fresh

    # ranges the data covered (for extrapolation warnings)
    @property
    def max_tokens(self) -> float:
        layer = [c for op, c in self.token.items() if op in LAYER_TOKEN_OPS]
        return min(c.size_range[1] for c in layer) if layer else 0.0

    def prefill_time(self, q: float, context: float, exact_parity: bool = True) -> float:
        """Seconds of one causal prefill chunk of ``q`` tokens after ``context`` cached tokens.

        When odd KV lengths are priced apart (:attr:`prefill_odd`), a whole
        ``context + q`` gets the factor of its parity and a fractional one the
        mean of both; ``exact_parity=False`` always takes the mean (``q`` and
        ``context`` are averages over several chunks). A chunk longer than
        the longest profiled one scales that row by the causal work.
        """
        if context < 0.5 and self.prefill_fresh is not None:
            return self.prefill_fresh(q)
        table = self.prefill
        t = table.eval(q, context)
        odd = self.prefill_odd
        if odd is not None:
            f = math.exp(odd.log_eval(q, context))
            t *= parity_scale(f, context + q) if exact_parity else 0.5 * (1.0 + f)
        top = table.rows[-1]
        if q > top:
            t *= (q * (context + q / 2)) / (top * (context + top / 2))
        return t

    def prefill_batch_factor(self, n: float, q: float) -> float:
        """Time of ``n`` equal chunks relative to ``n`` times one chunk (≤ 1 when batching helps)."""
        if n <= 1 or self.prefill_batch is None:
            return 1.0
        return math.exp(self.prefill_batch.log_eval(n, q))

    def decode_time(self, batch: float, context: float) -> float:
        """Seconds of decode attention for ``batch`` requests with ``context`` cached tokens each."""
        return self.decode.eval(batch, context)

    def to_json(self) -> dict:
        return {
            "token": {k: v.to_json() for k, v in sorted(self.token.items())},
            "prefill": None if self.prefill is None else self.prefill.to_json(),
            "decode": None if self.decode is None else self.decode.to_json(),
            "prefill_batch": None if self.prefill_batch is None else self.prefill_batch.to_json(),
            "prefill_odd": None if self.prefill_odd is None else self.prefill_odd.to_json(),
            "prefill_fresh": None if self.prefill_fresh is None else self.prefill_fresh.to_json(),
            "cpu": {k: v.to_json() for k, v in sorted(self.cpu.items())},
        }

    @classmethod
    def from_json(cls, tp: int, d: dict) -> "FittedShard":
        return cls(
            tp,
            {k: Curve.from_json(v) for k, v in d["token"].items()},
            None if d.get("prefill") is None else RowTable.from_json(d["prefill"]),
            None if d.get("decode") is None else RowTable.from_json(d["decode"]),
            None if d.get("prefill_batch") is None else RowTable.from_json(d["prefill_batch"]),
            {k: Curve.from_json(v) for k, v in d.get("cpu", {}).items()},
            None if d.get("prefill_odd") is None else RowTable.from_json(d["prefill_odd"]),
            None if d.get("prefill_fresh") is None else Curve.from_json(d["prefill_fresh"]),
        )


def _row_table(rows_key: np.ndarray, ctx: np.ndarray, t: np.ndarray, offset: Any, backend: str, smooth: bool) -> RowTable:
    keys = np.unique(rows_key)
    rows, curves = [], []
    for k in keys:
        m = rows_key == k
        x = ctx[m] + (k if offset == "row" else offset)
        rows.append(float(k))
        curves.append(Curve.fit(x, t[m], 1.0, backend, smooth).linear())  # affine in the KV length
    if not rows:
        raise VidurError("no attention measurements to fit")
    return RowTable(rows, curves, offset, "work")


def parity_scale(odd_factor: float, kv: float) -> float:
    """Multiplier of the even-length time for KV length ``kv``: the odd factor when ``kv`` is a
    whole odd number, 1 when whole and even, their mean when fractional (an average of requests)."""
    k = round(kv)
    if abs(kv - k) > 1e-6:
        return 0.5 * (1.0 + odd_factor)
    return odd_factor if k % 2 else 1.0


def _prefill_tables(
    q: np.ndarray, ctx: np.ndarray, t: np.ndarray, backend: str, smooth: bool
) -> tuple[RowTable, RowTable | None, Curve | None]:
    """Single-chunk prefill: the context table, the odd-length ratio table and the fresh-chunk curve.

    A chunk with no cached context runs another kernel than one after
    context (the executor's causal SDPA without a mask vs. with one: 2.3x
    apart at 1,024 tokens on an H200), so the context-0 points become a
    curve over ``q`` of their own (``None`` when no row has two points with
    context) and each row's context curve starts at its first cached
    context. Rows with fewer than two such points keep their context-0 point.
    See :func:`_parity_split` for the odd-length table.
    """
    fresh = ctx == 0
    with_ctx = np.zeros(len(q), dtype=bool)
    for r in np.unique(q):
        m = (q == r) & ~fresh
        if m.sum() >= 2:
            with_ctx |= m
    fresh_curve = None
    if with_ctx.any() and fresh.any():
        fresh_curve = Curve.fit(q[fresh], t[fresh], 2.0, backend, smooth)  # causal work grows as q²
        keep = with_ctx | (fresh & ~np.isin(q, q[with_ctx]))
        q, ctx, t = q[keep], ctx[keep], t[keep]
    table, odd = _parity_split(q, ctx, t, backend, smooth)
    return table, odd, fresh_curve


def _parity_split(
    q: np.ndarray, ctx: np.ndarray, t: np.ndarray, backend: str, smooth: bool
) -> tuple[RowTable, RowTable | None]:
    """Prefill curves, with odd KV lengths priced apart when they differ.

    Fits the curves to the even KV lengths (``ctx + q``), then measures each
    odd point against its row's even curve. When the odd points are
    consistently off (median ``|log ratio|`` above :data:`PARITY_THRESHOLD`
    and at least 80 % of them on the same side), returns the even table plus
    a table of ``log(odd / even)`` per row (flat between and beyond its
    knots); otherwise one table over all points and ``None``. Rows with
    fewer than two even points keep all their points in the main table.
    """
    kv = (ctx + q).astype(np.int64)
    odd = (kv % 2) == 1
    if odd.sum() < 3 or (~odd).sum() < 3:
        return _row_table(q, ctx, t, "row", backend, smooth), None
    rows = np.unique(q)
    split = np.zeros(len(q), dtype=bool)  # odd points priced by the ratio table
    for r in rows:
        m = q == r
        if (m & ~odd).sum() >= 2:
            split |= m & odd
    if split.sum() < 3:
        return _row_table(q, ctx, t, "row", backend, smooth), None
    even = _row_table(q[~split], ctx[~split], t[~split], "row", backend, smooth)
    ratio = np.array([math.log(ti) - even.log_eval(qi, ci) for qi, ci, ti in zip(q[split], ctx[split], t[split])])
    same_side = max((ratio > 0).mean(), (ratio < 0).mean())
    if abs(float(np.median(ratio))) <= PARITY_THRESHOLD or same_side < 0.8:
        return _row_table(q, ctx, t, "row", backend, smooth), None
    curves = []
    for r in rows:
        m = q[split] == r
        if not m.any():
            curves.append(Curve([0.0], [0.0], 0.0))
            continue
        lx = np.log(ctx[split][m] + r)
        order = np.argsort(lx)
        ux, inv = np.unique(lx[order], return_inverse=True)
        uy = np.array([np.median(ratio[m][order][inv == i]) for i in range(len(ux))])
        curves.append(Curve(ux, uy, 0.0))
    return even, RowTable([float(r) for r in rows], curves, "row")


def _noisy(cols: dict[str, np.ndarray]) -> bool:
    """Relative spread of the repeats above :data:`NOISE_THRESHOLD` (median over points)?"""
    if len(cols["op"]) == 0:
        return False
    return float(np.median(cols["std_ms"] / cols["median_ms"])) > NOISE_THRESHOLD


def fit_shard(
    data: ShardData, mask: dict[str, np.ndarray] | None = None, backend: str = "numpy", smooth: str = "auto"
) -> FittedShard:
    """Fit every operator of one shard; ``mask[op]`` (boolean, in ``select(op)`` order) keeps rows.

    ``backend`` picks the isotonic solver (see :func:`isotonic`). ``smooth``:
    ``"isotonic"`` forces monotone curves, ``"none"`` interpolates the
    measured medians, ``"auto"`` smooths only operators whose measurements
    are noisy (CPU timings): attention and host overheads isotonically,
    token-level operators locally (:func:`local_linear`), since their kernels
    are not monotone in the token count (on GPUs small steps; on CPUs a GEMM
    of 3 rows can take longer than one of 8). On clean (GPU) data every curve
    interpolates the measured medians.
    """

    def rows(op: str) -> dict[str, np.ndarray]:
        cols = data.select(op)
        if mask is not None and op in mask:
            cols = {k: v[mask[op]] for k, v in cols.items()}
        return cols

    def sm(cols: dict[str, np.ndarray]) -> bool:
        return smooth == "isotonic" or (smooth == "auto" and _noisy(cols))

    def sm_token(cols: dict[str, np.ndarray]) -> bool | str:
        if smooth == "isotonic":
            return True
        return "local" if smooth == "auto" and _noisy(cols) else False

    token: dict[str, Curve] = {}
    for op in LAYER_TOKEN_OPS + EDGE_OPS:
        c = rows(op)
        if len(c["op"]):
            token[op] = Curve.fit(c["num_tokens"], c["median_ms"] * MS, HI_SLOPE.get(op, 1.0), backend, sm_token(c))
    missing = [op for op in ("qkv_proj", "o_proj") if op not in token]
    if "down_proj" not in token and "experts" not in token:
        missing.append("down_proj")
    if missing:
        raise VidurError(f"profile shard tp={data.tp} has no {missing[0]} measurements; re-run `vidur profile`")

    pre = rows("attn_prefill")
    single = pre["batch"] <= 1
    prefill = prefill_batch = prefill_odd = prefill_fresh = None
    if single.any():
        prefill, prefill_odd, prefill_fresh = _prefill_tables(
            pre["num_tokens"][single], pre["context"][single], pre["median_ms"][single] * MS, backend, sm(pre)
        )
    multi = ~single
    if multi.any() and prefill is not None:
        n = pre["batch"][multi]
        q = pre["num_tokens"][multi]
        ctx = pre["context"][multi]
        t = pre["median_ms"][multi] * MS
        single_fit = FittedShard(data.tp, {}, prefill, None, None, {}, prefill_odd, prefill_fresh)
        ref = np.array([n_ * single_fit.prefill_time(q_, c_) for n_, q_, c_ in zip(n, q, ctx)])
        ratio = np.minimum(t / ref, 1.0)
        b_rows, b_curves = [], []
        for nv in np.unique(n):
            m = n == nv
            # ratio vs q: not monotone in general; keep the median per q as knots
            qs, inv = np.unique(q[m], return_inverse=True)
            r = np.array([np.median(ratio[m][inv == i]) for i in range(len(qs))])
            b_rows.append(float(nv))
            b_curves.append(Curve(np.log(qs), np.log(r), 0.0))
        prefill_batch = RowTable(b_rows, b_curves, 0.0)

    dec = rows("attn_decode")
    decode = None
    if len(dec["op"]):
        decode = _row_table(dec["batch"], dec["context"], dec["median_ms"] * MS, 1.0, backend, sm(dec))

    cpu: dict[str, Curve] = {}
    for op in CPU_OPS:
        c = rows(op)
        if len(c["op"]):
            cpu[op] = Curve.fit(np.maximum(c["batch"], 1), c["median_ms"] * MS, HI_SLOPE.get(op, 1.0), backend, True)
    return FittedShard(data.tp, token, prefill, decode, prefill_batch, cpu, prefill_odd, prefill_fresh)


# --- the whole profile ---------------------------------------------------------


class FittedProfile:
    """Fitted shards of one profile, keyed by the hash of the profile data they came from."""

    def __init__(self, data_hash: str, shards: dict[int, FittedShard], info: dict, shard_hashes: dict[int, str] | None = None):
        self.data_hash = data_hash
        self.shards = shards
        self.info = info
        self.shard_hashes = shard_hashes or {}

    def covers(self, profile: Profile) -> bool:
        """Fitted from exactly the data of every shard ``profile`` has loaded?"""
        if self.data_hash == profile.data_hash and set(profile.shards) <= set(self.shards):
            return True
        return bool(profile.shard_hashes) and all(
            t in self.shards and self.shard_hashes.get(t) == h for t, h in profile.shard_hashes.items()
        )

    def to_json(self) -> dict:
        return {
            "format": FIT_FORMAT,
            "data_hash": self.data_hash,
            "shard_hashes": {str(t): h for t, h in sorted(self.shard_hashes.items())},
            "info": self.info,
            "shards": {str(t): s.to_json() for t, s in sorted(self.shards.items())},
        }

    @classmethod
    def from_json(cls, d: dict) -> "FittedProfile":
        if d.get("format") != FIT_FORMAT:
            raise VidurError(f"not a {FIT_FORMAT} fitted-profile file")
        return cls(
            d["data_hash"],
            {int(t): FittedShard.from_json(int(t), s) for t, s in d["shards"].items()},
            d.get("info", {}),
            {int(t): h for t, h in d.get("shard_hashes", {}).items()},
        )

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return p


def fit_profile(profile: Profile, backend: str = "numpy") -> FittedProfile:
    """Fit every shard of a loaded profile."""
    shards = {t: fit_shard(d, backend=backend) for t, d in sorted(profile.shards.items())}
    info = {
        "device": profile.device,
        "model": profile.model,
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": "log-log piecewise-linear (isotonic on noisy data); prefill by KV-length parity and fresh chunks",
    }
    return FittedProfile(profile.data_hash, shards, info, dict(profile.shard_hashes))


def cache_dir() -> Path:
    env = os.environ.get(FIT_CACHE_ENV)
    if env:
        return Path(env).expanduser() / "fits"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidur" / "fits"


def _try_read(path: Path, profile: Profile) -> FittedProfile | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        fp = FittedProfile.from_json(d)
    except (OSError, ValueError, KeyError, TypeError, VidurError):
        return None
    return fp if fp.covers(profile) else None


def get_fitted(profile: Profile, *, save: bool = True) -> FittedProfile:
    """The fitted model of ``profile``: from ``<profile>/fitted.json`` or the user cache when it was
    fitted from the same data (per-shard hashes), else fitted now (and cached when ``save``)."""
    for cand in (profile.path / FIT_FILE, cache_dir() / f"{profile.data_hash}.json"):
        fp = _try_read(cand, profile)
        if fp is not None:
            return fp
    fp = fit_profile(profile)
    if save:
        try:
            fp.save(cache_dir() / f"{profile.data_hash}.json")
        except OSError:
            pass
    return fp
