"""Reading request traces from CSV files (no pandas).

A trace is a CSV with a header line. The columns vidur reads are
``arrived_at`` (seconds, non-negative, non-decreasing),
``num_prefill_tokens`` and ``num_decode_tokens`` (non-negative integers);
other columns are ignored. Every problem is a one-line
:class:`~vidur.errors.VidurError` naming the file and, for a bad value, the
line (1-based, the header being line 1).

Token counts of 0 are not rejected: a request has at least one prompt token
and produces at least one output token, so a 0 is clamped to 1, and the
number of clamped rows is logged once per file version and returned in
:class:`TraceTokenCounts` (``clamped_prompt``, ``clamped_output``).

Block hashes (what prefix caching shares) come from an optional ``hash_ids``
column: block ids separated by spaces (``"0 1 2"``; brackets and commas are
accepted too), one id per ``hash_block_size`` tokens of the prompt, equal
ids under equal preceding ids meaning equal content (:func:`read_hashes`).

A file named ``*.jsonl`` is read as a Mooncake trace (kvcache-ai/Mooncake,
FAST'25): one JSON object per line with ``timestamp`` (milliseconds),
``input_length``, ``output_length`` and optionally ``hash_ids`` (a list, one
id per 512-token block); they map to ``arrived_at`` (seconds),
``num_prefill_tokens``, ``num_decode_tokens`` and ``hash_ids``.

Parsed files are cached per (real path, mtime, size), so capacity search
re-reading one trace for every configuration pays for the parse once; a file
edited on disk is parsed again. Cached arrays are read-only.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import OrderedDict
from typing import Any

import attrs
import numpy as np

from vidur.errors import VidurError

log = logging.getLogger(__name__)

ARRIVED_AT = "arrived_at"
PREFILL = "num_prefill_tokens"
DECODE = "num_decode_tokens"
HASHES = "hash_ids"
MOONCAKE = {"timestamp": ARRIVED_AT, "input_length": PREFILL, "output_length": DECODE, "hash_ids": HASHES}

_CACHE_SIZE = 16
_CACHE: OrderedDict[tuple, "_Table"] = OrderedDict()


@attrs.frozen(eq=False)
class TraceTokenCounts:
    """Prompt and output token counts of a trace, row by row (int64, >= 1)."""

    prompt: np.ndarray
    output: np.ndarray
    clamped_prompt: int = 0  # rows whose num_prefill_tokens was 0, counted as 1
    clamped_output: int = 0  # rows whose num_decode_tokens was 0, counted as 1

    def __len__(self) -> int:
        return len(self.prompt)


class _Table:
    """One parsed CSV: header, raw cells per column, and converted columns."""

    __slots__ = ("path", "header", "cells", "lines", "derived")

    def __init__(self, path: str, header: list[str], cells: list[tuple[str, ...]], lines: np.ndarray):
        self.path = path
        self.header = header
        self.cells = cells
        self.lines = lines
        self.derived: dict[Any, Any] = {}

    def column(self, name: str) -> tuple[str, ...]:
        try:
            i = self.header.index(name)
        except ValueError:
            found = ", ".join(repr(h) for h in self.header) or "none"
            raise VidurError(
                f"trace {self.path} has no column {name!r} (columns found: {found}); "
                "rename the column or use another trace"
            ) from None
        return self.cells[i]


def clear_cache() -> None:
    """Forget every parsed trace."""
    _CACHE.clear()


def _stat(real: str, shown: str) -> os.stat_result:
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise VidurError(f"trace file not found: {shown}") from None
    except OSError as exc:
        raise VidurError(f"cannot read trace file {shown}: {exc.strerror or exc}") from None
    if not os.path.isfile(real):
        raise VidurError(f"trace path is not a file: {shown}")
    return st


def _load(path: str | os.PathLike) -> _Table:
    shown = os.fspath(path)
    real = os.path.realpath(os.path.expanduser(shown))
    st = _stat(real, shown)
    key = (real, st.st_mtime_ns, st.st_size)
    table = _CACHE.get(key)
    if table is not None:
        _CACHE.move_to_end(key)
        return table
    table = _parse(real, shown)
    # drop older versions of the same file, then the least recently used
    for old in [k for k in _CACHE if k[0] == real]:
        del _CACHE[old]
    _CACHE[key] = table
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return table


def _parse_jsonl(real: str, shown: str) -> _Table:
    """A Mooncake JSONL trace as a table with vidur's column names."""
    import json

    rows: list[tuple[str, ...]] = []
    lines: list[int] = []
    header = list(MOONCAKE.values())
    try:
        with open(real, encoding="utf-8-sig") as f:
            for num, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise VidurError(f"{shown} line {num}: not a JSON object ({exc.msg}); "
                                     "a Mooncake trace has one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise VidurError(f"{shown} line {num}: not a JSON object; a Mooncake trace has one per line")
                missing = [k for k in ("timestamp", "input_length", "output_length") if k not in obj]
                if missing:
                    raise VidurError(f"{shown} line {num}: missing {', '.join(missing)} "
                                     "(a Mooncake trace line has timestamp, input_length, output_length, hash_ids)")
                ts = obj["timestamp"]
                if not isinstance(ts, (int, float)) or isinstance(ts, bool):
                    raise VidurError(f"{shown} line {num}: timestamp {ts!r} is not a number of milliseconds")
                hashes = obj.get("hash_ids", [])
                if not isinstance(hashes, list):
                    raise VidurError(f"{shown} line {num}: hash_ids must be a list of integers")
                rows.append((repr(ts / 1000.0), str(obj["input_length"]), str(obj["output_length"]),
                             " ".join(str(h) for h in hashes)))
                lines.append(num)
    except UnicodeDecodeError:
        raise VidurError(f"trace file is not UTF-8 text: {shown}") from None
    except OSError as exc:
        raise VidurError(f"cannot read trace file {shown}: {exc.strerror or exc}") from None
    if not rows:
        raise VidurError(f"trace file has no requests: {shown}; add one JSON object per line")
    return _Table(shown, header, list(zip(*rows)), np.asarray(lines, dtype=np.int64))


def _parse(real: str, shown: str) -> _Table:
    if real.endswith(".jsonl"):
        return _parse_jsonl(real, shown)
    try:
        with open(real, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header: list[str] | None = None
            rows: list[list[str]] = []
            lines: list[int] = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                if header is None:
                    header = [c.strip() for c in row]
                    continue
                if len(row) != len(header):
                    raise VidurError(
                        f"{shown} line {reader.line_num}: {len(row)} fields, but the header has "
                        f"{len(header)} ({', '.join(header)}); fix the row"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise VidurError(f"trace file is not UTF-8 text: {shown}; give a CSV file") from None
    except csv.Error as exc:
        raise VidurError(f"trace file {shown} is not valid CSV: {exc}") from None
    except OSError as exc:
        raise VidurError(f"cannot read trace file {shown}: {exc.strerror or exc}") from None
    if header is None:
        raise VidurError(f"trace file is empty: {shown}; expected a header line such as "
                         f"{ARRIVED_AT},{PREFILL},{DECODE} and one row per request")
    if not rows:
        raise VidurError(f"trace file has a header but no rows: {shown}; add one row per request")
    cells = list(zip(*rows))
    return _Table(shown, header, cells, np.asarray(lines, dtype=np.int64))


def _floats(table: _Table, name: str, what: str) -> np.ndarray:
    """Column ``name`` as float64; the first unparsable cell is reported."""
    raw = table.column(name)
    try:
        values = np.asarray(raw, dtype=np.float64)
    except ValueError:
        for i, cell in enumerate(raw):
            try:
                float(cell)
            except ValueError:
                raise VidurError(f"{table.path} line {table.lines[i]}: {name} {cell!r} is not {what}") from None
        raise  # pragma: no cover - numpy and float() disagree
    return values


def _first_bad(table: _Table, name: str, bad: np.ndarray, what: str) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        cell = table.column(name)[i]
        raise VidurError(f"{table.path} line {table.lines[i]}: {name} {cell!r} is not {what}")


def _times(table: _Table, name: str) -> np.ndarray:
    what = "a non-negative number of seconds"
    values = _floats(table, name, what)
    _first_bad(table, name, ~np.isfinite(values) | (values < 0), what)
    back = np.flatnonzero(np.diff(values) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise VidurError(
            f"{table.path} line {table.lines[i]}: {name} {values[i]:g} is earlier than the row before "
            f"({values[i - 1]:g}); sort the trace by {name}"
        )
    return values


def _counts(table: _Table, name: str) -> np.ndarray:
    what = "a non-negative integer"
    values = _floats(table, name, what)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values)) | (values >= 2.0**62)
    _first_bad(table, name, bad, what)
    return values.astype(np.int64)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def trace_columns(path: str | os.PathLike) -> list[str]:
    """The column names in the header of the trace at ``path``."""
    return list(_load(path).header)


def read_arrivals(path: str | os.PathLike) -> np.ndarray:
    """The ``arrived_at`` column as read-only float64 seconds, as in the file
    (non-negative, non-decreasing; not shifted)."""
    table = _load(path)
    key = "arrivals"
    if key not in table.derived:
        table.derived[key] = _readonly(_times(table, ARRIVED_AT))
    return table.derived[key]


def read_lengths(path: str | os.PathLike) -> TraceTokenCounts:
    """The ``num_prefill_tokens``/``num_decode_tokens`` columns, read-only int64.

    A count of 0 is clamped to 1 (see the module docstring)."""
    table = _load(path)
    key = "lengths"
    if key not in table.derived:
        prompt = _counts(table, PREFILL)
        output = _counts(table, DECODE)
        zp = int(np.count_nonzero(prompt == 0))
        zo = int(np.count_nonzero(output == 0))
        if zp or zo:
            np.maximum(prompt, 1, out=prompt)
            np.maximum(output, 1, out=output)
            log.warning(
                "trace %s: %d rows with %s 0 and %d rows with %s 0 counted as 1 token",
                table.path, zp, PREFILL, zo, DECODE,
            )
        table.derived[key] = TraceTokenCounts(_readonly(prompt), _readonly(output), zp, zo)
    return table.derived[key]


def has_hashes(path: str | os.PathLike) -> bool:
    """True if the trace has a ``hash_ids`` column with at least one id."""
    table = _load(path)
    return HASHES in table.header and any(c.strip(" []") for c in table.column(HASHES))


def read_hashes(path: str | os.PathLike) -> list[tuple[int, ...]]:
    """The ``hash_ids`` column: one tuple of block ids per row (cached)."""
    table = _load(path)
    key = "hashes"
    if key not in table.derived:
        out = []
        for i, cell in enumerate(table.column(HASHES)):
            text = cell.replace("[", " ").replace("]", " ").replace(",", " ")
            try:
                out.append(tuple(int(x) for x in text.split()))
            except ValueError:
                raise VidurError(f"{table.path} line {table.lines[i]}: {HASHES} {cell!r} is not a list of "
                                 "integer block ids (write them separated by spaces)") from None
        table.derived[key] = out
    return table.derived[key]
