"""Vectorised text formatting of numeric columns (CSV rows, JSON events).

Formatting half a million rows number by number in Python costs seconds; here
each chunk of rows becomes one ``uint8`` matrix: every part (a literal, a
number column, a short-string column) owns a fixed range of byte columns,
numbers are right-aligned digits whose unused positions hold a pad byte (0),
and the pad bytes are dropped in one boolean-mask pass at the end. Numbers
come out in plain decimal: integers exactly, floats at a fixed number of
decimals with trailing zeros (and a bare ``.``) removed. A NaN becomes an
empty field (or ``nan_text``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

_PAD = 0
_ZERO = ord("0")
CHUNK_ROWS = 1 << 16


class Num:
    """A numeric column to format; ``decimals=None`` picks integers for
    integer dtypes and up to 9 decimals (fewer for huge values) for floats."""

    __slots__ = ("values", "decimals", "nan_text")

    def __init__(self, values, decimals: int | None = None, nan_text: bytes = b""):
        self.values = np.asarray(values)
        self.decimals = decimals
        self.nan_text = nan_text


class Text:
    """A per-row short string column (ASCII; stored as a fixed-width bytes array)."""

    __slots__ = ("values",)

    def __init__(self, values):
        arr = np.asarray(values)
        if arr.dtype.kind == "U":
            arr = np.char.encode(arr, "ascii")
        self.values = arr.astype("S")


Part = "bytes | Num | Text"


def _digits_needed(max_int: int) -> int:
    return max(1, len(str(int(max_int))))


class _NumPlan:
    """Widths and scaling for one numeric column, computed over all rows."""

    def __init__(self, col: Num):
        v = col.values
        self.nan_text = col.nan_text
        if v.dtype.kind in "iub":
            self.decimals = 0
            iv = v.astype(np.int64, copy=False)
            self.nan = None
            self.scaled = iv
        elif v.dtype.kind == "f":
            v = v.astype(np.float64, copy=False)
            nan = ~np.isfinite(v)
            self.nan = nan if nan.any() else None
            finite = v[~nan] if self.nan is not None else v
            amax = float(np.abs(finite).max()) if finite.size else 0.0
            dec = 9 if col.decimals is None else int(col.decimals)
            # keep |v| * 10**dec well inside int64 and float64's exact range
            while dec > 0 and amax * 10.0**dec >= 1e15:
                dec -= 1
            if amax >= 9e18:
                raise ValueError(f"value {amax} too large to format")
            self.decimals = dec
            vv = np.where(nan, 0.0, v) if self.nan is not None else v
            self.scaled = np.rint(vv * 10.0**dec).astype(np.int64)
        else:
            raise TypeError(f"cannot format dtype {v.dtype}")
        s = self.scaled
        if s.size:
            lo, hi = int(s.min()), int(s.max())
        else:
            lo = hi = 0
        self.neg = lo < 0
        self.int_digits = _digits_needed(max(abs(lo), abs(hi)) // 10**self.decimals)
        self.width = (
            int(self.neg)
            + self.int_digits
            + (1 + self.decimals if self.decimals else 0)
        )
        self.width = max(self.width, len(self.nan_text))


def _write_num(out: np.ndarray, col0: int, plan: _NumPlan, sl: slice) -> None:
    s = plan.scaled[sl]
    neg = s < 0 if plan.neg else None
    a = np.abs(s) if plan.neg else s.copy()
    n = a.shape[0]
    dec = plan.decimals
    pos = col0 + plan.width  # one past the last byte of this field
    if dec:
        scale = 10**dec
        ip, fp = np.divmod(a, scale)
        # fraction digits, right to left; trailing zeros become pad
        trailing = np.ones(n, dtype=bool)
        for k in range(dec):
            fp, d = np.divmod(fp, 10)
            trailing &= d == 0
            out[:, pos - 1 - k] = np.where(trailing, _PAD, d + _ZERO)
        out[:, pos - 1 - dec] = np.where(trailing, _PAD, ord("."))
        pos -= dec + 1
        a = ip
    # integer digits right to left; leading zeros (beyond the first digit) are pad
    for k in range(plan.int_digits):
        if k == 0:
            a, d = np.divmod(a, 10)
            out[:, pos - 1] = d + _ZERO
        else:
            live = a > 0
            a, d = np.divmod(a, 10)
            out[:, pos - 1 - k] = np.where(live, d + _ZERO, _PAD)
    if plan.neg:
        # the minus sign goes just left of the first significant digit
        ndig = np.ones(n, dtype=np.int64)
        ip_all = np.abs(s) // 10**dec
        for k in range(1, plan.int_digits):
            ndig += ip_all >= 10**k
        sign_col = pos - 1 - ndig
        rows = np.nonzero(neg)[0]
        out[rows, sign_col[rows]] = ord("-")
    if plan.nan is not None:
        nan = plan.nan[sl]
        if nan.any():
            out[nan, col0 : col0 + plan.width] = _PAD
            t = plan.nan_text
            if t:
                out[np.ix_(nan, np.arange(col0, col0 + len(t)))] = np.frombuffer(t, np.uint8)


def format_rows(parts: Sequence, num_rows: int | None = None) -> Iterable[bytes]:
    """Yield the rows described by ``parts`` as bytes, a chunk of rows at a time.

    ``parts`` mixes ``bytes`` literals (the same in every row), :class:`Num`
    and :class:`Text` columns of equal length. Literals must not contain NUL.
    """
    cols = [p for p in parts if not isinstance(p, (bytes, bytearray))]
    if num_rows is None:
        if not cols:
            raise ValueError("num_rows is required when there are no columns")
        num_rows = len(cols[0].values)
    plans: list = []
    widths: list[int] = []
    for p in parts:
        if isinstance(p, (bytes, bytearray)):
            if b"\0" in p:
                raise ValueError("literal contains NUL")
            plans.append(np.frombuffer(bytes(p), np.uint8))
            widths.append(len(p))
        elif isinstance(p, Num):
            if len(p.values) != num_rows:
                raise ValueError("columns differ in length")
            plan = _NumPlan(p)
            plans.append(plan)
            widths.append(plan.width)
        elif isinstance(p, Text):
            if len(p.values) != num_rows:
                raise ValueError("columns differ in length")
            plans.append(p)
            widths.append(p.values.dtype.itemsize)
        else:
            raise TypeError(f"unsupported part {type(p).__name__}")
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    total = int(offsets[-1])
    for r0 in range(0, num_rows, CHUNK_ROWS):
        sl = slice(r0, min(num_rows, r0 + CHUNK_ROWS))
        n = sl.stop - sl.start
        out = np.zeros((n, total), dtype=np.uint8)
        for plan, c0, w in zip(plans, offsets[:-1], widths):
            c0 = int(c0)
            if isinstance(plan, np.ndarray):
                out[:, c0 : c0 + w] = plan
            elif isinstance(plan, _NumPlan):
                _write_num(out, c0, plan, sl)
            else:
                if w:
                    out[:, c0 : c0 + w] = plan.values[sl].view(np.uint8).reshape(n, w)
        flat = out.ravel()
        yield flat[flat != _PAD].tobytes()


def format_float(x: float, decimals: int = 9) -> str:
    """Format one float the way :class:`Num` would (for headers and tests)."""
    if not math.isfinite(x):
        return ""
    s = f"{x:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s
