"""A read-only view of a run's per-request columns, request by request.

``SimulationResult.requests`` used to be the run's :class:`Request` objects;
a run now keeps no object per request after it completes, only the columns
of ``RunRecords.requests``. :class:`RequestsView` reads those columns lazily:
``len(view)``, ``view[i]`` (negative indices and slices too) and iteration
give :class:`RequestRecord` tuples, made on demand and not kept, whose
attribute names are a request's (``id``, ``replica``, ``arrival``,
``prompt``, ``output``, ``first_scheduled``, ``first_token``,
``completion``, ``preemptions``, ``recomputed``, ``cached``, ``session``).

Values are a finished :class:`Request`'s: times a request never reached are
``inf`` (the columns hold NaN for them), ``replica`` is -1 for a request that
never arrived, ``cached`` is 0 without prefix caching and ``session`` -1
without sessions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Iterator, Mapping, NamedTuple

import numpy as np

#: records made per numpy-to-Python conversion while iterating
_CHUNK = 8192


class RequestRecord(NamedTuple):
    """One request's facts after a run (read-only; see :mod:`vidur.engine.request_view`)."""

    id: int
    replica: int
    arrival: float
    prompt: int
    output: int
    first_scheduled: float
    first_token: float
    completion: float
    preemptions: int
    recomputed: int
    cached: int
    session: int

    @property
    def finished(self) -> bool:
        """The request produced all its output tokens."""
        return self.completion != math.inf


# record field -> (column of RunRecords.requests, value when the column is absent)
_SOURCES = (
    ("id", "request_id", None),
    ("replica", "replica", None),
    ("arrival", "arrival", None),
    ("prompt", "prompt_tokens", None),
    ("output", "output_tokens", None),
    ("first_scheduled", "first_scheduled", None),
    ("first_token", "first_token", None),
    ("completion", "completion", None),
    ("preemptions", "preemptions", None),
    ("recomputed", "recomputed_tokens", None),
    ("cached", "cached_tokens", 0),
    ("session", "session", -1),
)
_TIMES = frozenset({"arrival", "first_scheduled", "first_token", "completion"})


class RequestsView(Sequence):
    """The requests of a run, in id order, read from its per-request columns (see the module docstring)."""

    __slots__ = ("_cols", "_n")

    def __init__(self, columns: Mapping[str, np.ndarray]):
        self._cols = columns
        self._n = len(columns["request_id"])

    def __len__(self) -> int:
        return self._n

    def _lists(self, lo: int, hi: int) -> list[list]:
        n = hi - lo
        out = []
        for field, name, default in _SOURCES:
            col = self._cols.get(name)
            if col is None:
                out.append([default] * n)
                continue
            part = col[lo:hi]
            if field in _TIMES:
                part = np.where(np.isnan(part), math.inf, part)
            out.append(part.tolist())
        return out

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        try:
            i = int(i.__index__())
        except AttributeError:
            raise TypeError(f"request indices must be integers or slices, not {type(i).__name__}") from None
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"request index out of range (the run has {self._n} requests)")
        return RequestRecord(*(vals[0] for vals in self._lists(i, i + 1)))

    def __iter__(self) -> Iterator[RequestRecord]:
        for lo in range(0, self._n, _CHUNK):
            yield from map(RequestRecord._make, zip(*self._lists(lo, min(lo + _CHUNK, self._n))))

    def __repr__(self) -> str:
        return f"RequestsView({self._n} requests)"
