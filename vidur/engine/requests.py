"""A run's requests: made from the request table when they arrive, written
into columns when they finish.

:class:`TableRequests` is what :class:`~vidur.engine.loop.EventLoop` runs for
a :class:`~vidur.engine.simulation.Simulation`. It hands the loop the table's
arrivals a block at a time and makes that block's :class:`Request` objects
(``BLOCK`` rows: a bounded number of objects exist before they arrive). When
a request completes, the loop passes it to :meth:`TableRequests.record`: its
facts go into preallocated numpy columns indexed by request id (through a
small buffer, flushed ``FLUSH`` requests at a time) and nothing keeps the
object. :meth:`TableRequests.columns` writes the requests still live when the
loop stopped (``max_time``) from their objects and returns the per-request
columns of :data:`~vidur.metrics.records.REQUEST_COLUMNS` (plus
``cached_tokens`` and ``session`` when the run has them). Requests that
never arrived keep NaN times, replica -1 and zero counters.

Closed-loop workloads (multi-turn sessions, ``content.after``): the arrival
stream holds only the rows that arrive at their table time; the others are
made when a completion releases them (:class:`Followups`), and ids are
handed out at arrival by the loop, so the columns are written by id and the
table row of each id is kept (``row``). Rows that never arrived are numbered
after the arrived ones, in table order.
"""

from __future__ import annotations

import math

import numpy as np

from vidur.entities.request import INF, Request
from vidur.workload.workload import RequestTable

#: rows per block of arrivals (the request objects made ahead of their arrival)
BLOCK = 4096
#: completed requests buffered before their facts are written into the columns
FLUSH = 4096


class Followups:
    """Closed loop: which request each completion releases, made when it does.

    ``get(row)`` is ``(request, think seconds)`` for the request released by
    the completion of table row ``row``, or None. ``min_think`` is the
    shortest think time (for the fast-forward bound).
    """

    __slots__ = ("_source", "_next", "_think", "min_think")

    def __init__(self, source: "TableRequests", after: np.ndarray, think: np.ndarray):
        n = len(after)
        rows = np.flatnonzero(after >= 0)
        nxt = np.full(n, -1, dtype=np.int64)
        # a row releases one request: the last row naming it (as a mapping built in row order)
        rev = rows[::-1]
        firsts, idx = np.unique(after[rev], return_index=True)
        nxt[firsts] = rev[idx]
        self._source = source
        self._next = nxt.tolist()
        self._think = think.tolist()
        released = nxt[nxt >= 0]
        self.min_think = float(think[released].min()) if released.size else 0.0

    def get(self, row: int) -> tuple[Request, float] | None:
        nrow = self._next[row]
        if nrow < 0:
            return None
        req = self._source.make_rows(slice(nrow, nrow + 1))[0]
        req.arrival = INF  # arrives a think time after the release
        return req, self._think[nrow]



def requests_for_rows(table: RequestTable, rows: np.ndarray | slice) -> list[Request]:
    """Fresh :class:`Request` objects for table ``rows`` (id = row), carrying their content
    (prompt leaf, output node, row, session) when the workload has one."""
    ids = range(*rows.indices(len(table))) if isinstance(rows, slice) else rows.tolist()
    reqs = [
        Request(i, a, p, o)
        for i, a, p, o in zip(ids, table.arrival[rows].tolist(), table.prompt[rows].tolist(), table.output[rows].tolist())
    ]
    c = table.content
    if c is not None:
        session = c.session[rows].tolist() if c.session is not None else [-1] * len(reqs)
        for r, leaf, out, s in zip(reqs, c.leaf[rows].tolist(), c.out[rows].tolist(), session):
            r.content = (leaf, out, r.id, s)
    return reqs

class TableRequests:
    """The requests of a :class:`RequestTable` for one event loop (see the module docstring).

    ``prefix_caching`` adds the ``cached_tokens`` column. ``rows`` (ascending table rows) runs only
    those requests (a parallel worker's share of an open-loop table): ids are rows and the columns
    hold those rows, ``request_id`` saying which. Use one instance for one run.
    """

    def __init__(self, table: RequestTable, *, prefix_caching: bool = False, rows: np.ndarray | None = None):
        self.table = table
        c = table.content
        self.content = c
        self._session = c.session if c is not None and c.session is not None else None
        self.followups: Followups | None = None
        self._subset = None if rows is None else np.asarray(rows, dtype=np.int64)
        #: the rows arriving at their table time, in order (None: every row)
        self._static_rows: np.ndarray | None = self._subset
        if c is not None and c.closed_loop:
            if rows is not None:
                raise ValueError("closed-loop sessions release requests across the table: run them on every row")
            self.followups = Followups(self, c.after, c.think)
            self._static_rows = np.flatnonzero(c.after < 0)
        n = len(table) if rows is None else len(self._subset)
        self.n = n
        self.live: set[Request] = set()  # made and not yet recorded (arrived, or waiting to)
        self._buf: list[Request] = []
        nan = math.nan
        self.replica = np.full(n, -1, dtype=np.int64)
        self.first_scheduled = np.full(n, nan)
        self.first_token = np.full(n, nan)
        self.completion = np.full(n, nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.recomputed = np.zeros(n, dtype=np.int64)
        self.cached = np.zeros(n, dtype=np.int64) if prefix_caching else None
        closed = self.followups is not None
        #: closed loop only: arrival time and table row of each id (ids are handed out at arrival)
        self.arrival = np.full(n, nan) if closed else None
        self.row = np.full(n, -1, dtype=np.int64) if closed else None
        self.finalised = False

    def __len__(self) -> int:
        return self.n

    # -- making requests ----------------------------------------------------------
    def make_rows(self, rows: np.ndarray | slice) -> list[Request]:
        """Fresh requests for table ``rows`` (id = row), with their content; they are live."""
        reqs = requests_for_rows(self.table, rows)
        self.live.update(reqs)
        return reqs

    def blocks(self):
        """``(arrival times, requests)`` lists of the rows arriving at their table time, block by block."""
        static = self._static_rows
        total = self.n if static is None else len(static)
        for lo in range(0, total, BLOCK):
            hi = min(lo + BLOCK, total)
            rows = slice(lo, hi) if static is None else static[lo:hi]
            reqs = self.make_rows(rows)
            yield [r.arrival for r in reqs], reqs

    # -- recording completions ------------------------------------------------------
    def record(self, done: list[Request]) -> None:
        """``done`` completed: their facts go into the columns, the objects are let go."""
        self.live.difference_update(done)
        buf = self._buf
        buf.extend(done)
        if len(buf) >= FLUSH:
            self._write(buf)
            buf.clear()

    def _write(self, reqs: list[Request]) -> None:
        ids = np.array([r.id for r in reqs], dtype=np.int64)
        if self._subset is not None:
            ids = np.searchsorted(self._subset, ids)
        self.replica[ids] = [r.replica for r in reqs]
        self.first_scheduled[ids] = [r.first_scheduled for r in reqs]
        self.first_token[ids] = [r.first_token for r in reqs]
        self.completion[ids] = [r.completion for r in reqs]
        self.preemptions[ids] = [r.preemptions for r in reqs]
        self.recomputed[ids] = [r.recomputed for r in reqs]
        if self.cached is not None:
            self.cached[ids] = [r.cached for r in reqs]
        if self.arrival is not None:
            self.arrival[ids] = [r.arrival for r in reqs]
            self.row[ids] = [r.content[2] for r in reqs]

    def columns(self, next_id: int = 0) -> dict[str, np.ndarray]:
        """The per-request columns, in id order, once the loop has stopped (call once).

        ``next_id``: the loop's next closed-loop id (the number of requests that arrived)."""
        if self.finalised:
            raise RuntimeError("TableRequests.columns() was already called for this run")
        self.finalised = True
        self._write(self._buf)
        self._buf = []
        # still live when the loop stopped (max_time): written from their objects
        self._write([r for r in self.live if r.replica >= 0])
        self.live = set()
        t = self.table
        if self.row is None:
            rows = self._subset  # None: every row, in id order
            arrival = t.arrival.copy() if rows is None else t.arrival[rows]
        else:
            rows = self.row
            arrived = np.zeros(self.n, dtype=bool)
            arrived[rows[:next_id]] = True
            rows[next_id:] = np.flatnonzero(~arrived)  # never arrived: numbered after, in table order
            arrival = self.arrival
            late = rows[next_id:]
            arrival[next_id:] = np.where(self.content.after[late] < 0, t.arrival[late], math.nan)
        for col in (arrival, self.first_scheduled, self.first_token, self.completion):
            col[np.isinf(col)] = math.nan

        def by_id(col):
            return col.copy() if rows is None else col[rows]

        out = {
            "request_id": np.arange(self.n, dtype=np.int64) if self._subset is None else self._subset.copy(),
            "replica": self.replica,
            "arrival": arrival,
            "prompt_tokens": by_id(t.prompt),
            "output_tokens": by_id(t.output),
            "first_scheduled": self.first_scheduled,
            "first_token": self.first_token,
            "completion": self.completion,
            "preemptions": self.preemptions,
            "recomputed_tokens": self.recomputed,
        }
        if self.cached is not None:
            out["cached_tokens"] = self.cached
        if self._session is not None:
            out["session"] = self._session.astype(np.int64, copy=True) if rows is None else self._session[rows].astype(
                np.int64)
        return out
