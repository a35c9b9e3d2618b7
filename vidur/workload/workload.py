"""Putting arrivals and lengths together into a table of requests."""

from __future__ import annotations

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.workload import _checks as ck
from vidur.workload.base import ArrivalProcess, LengthGenerator
from vidur.workload.content import Content


def _arrival_array(_inst, attr, value) -> None:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.float64:
        raise VidurError(f"RequestTable.{attr.name} must be a 1-d float64 numpy array")
    if value.size and (not np.isfinite(value).all() or value[0] < 0 or (np.diff(value) < 0).any()):
        raise VidurError("RequestTable.arrival must be finite, >= 0 and sorted (non-decreasing)")


def _count_array(_inst, attr, value) -> None:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype != np.int64:
        raise VidurError(f"RequestTable.{attr.name} must be a 1-d int64 numpy array")
    if value.size and value.min() < 1:
        raise VidurError(f"RequestTable.{attr.name} must be >= 1 for every request")


@attrs.frozen(eq=False)
class RequestTable:
    """The requests of one run, in arrival order: ``arrival`` (float64 s, sorted),
    ``prompt`` and ``output`` (int64 tokens, >= 1), and optionally what they
    say (:class:`~vidur.workload.content.Content`: shared prefixes, sessions).

    A closed-loop row (``content.after >= 0``) arrives ``content.think``
    seconds after row ``after`` completes; its ``arrival`` holds its
    session's start, which keeps the column sorted.
    """

    arrival: np.ndarray = attrs.field(validator=_arrival_array)
    prompt: np.ndarray = attrs.field(validator=_count_array)
    output: np.ndarray = attrs.field(validator=_count_array)
    content: Content | None = None

    def __attrs_post_init__(self) -> None:
        n = len(self.arrival)
        if len(self.prompt) != n or len(self.output) != n:
            raise VidurError(
                f"RequestTable columns differ in length: arrival {n}, prompt {len(self.prompt)}, "
                f"output {len(self.output)}"
            )
        if self.content is not None:
            self.content.check(self.prompt)

    def __len__(self) -> int:
        return len(self.arrival)

    @property
    def num_requests(self) -> int:
        return len(self.arrival)


def _children(rng: np.random.Generator) -> tuple[np.random.Generator, np.random.Generator]:
    if not isinstance(rng, np.random.Generator):
        raise VidurError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), got {type(rng).__name__}"
        )
    try:
        a, b = rng.spawn(2)
    except (AttributeError, TypeError, ValueError):  # numpy < 1.25 or no seed sequence
        a, b = (np.random.default_rng(s) for s in rng.integers(0, 2**63, size=2))
    return a, b


def build_requests(
    arrival: ArrivalProcess,
    lengths: LengthGenerator,
    rng: np.random.Generator,
    num_requests: int | None = None,
    duration: float | None = None,
) -> RequestTable:
    """Draw arrival times and lengths for a run.

    Exactly one of ``num_requests`` and ``duration`` (seconds) is given; with
    ``duration`` the run has every arrival in [0, duration). Arrivals and
    lengths draw from two independent child streams of ``rng``, so changing
    the arrival process (or its qps) leaves the sequence of lengths as it was.
    """
    ck.exactly_one(num_requests, duration)
    if num_requests is not None:
        num_requests = ck.check_count(num_requests)
    else:
        duration = ck.check_duration(duration)
    arr_rng, len_rng = _children(rng)
    times = np.asarray(arrival.generate(arr_rng, num_requests, duration), dtype=np.float64)
    who = f"arrival process {getattr(arrival, 'name', type(arrival).__name__)!r}"
    if times.ndim != 1:
        raise VidurError(f"{who} returned a {times.ndim}-d array; it must return a 1-d array of times")
    if num_requests is not None and len(times) != num_requests:
        raise VidurError(f"{who} returned {len(times)} arrivals for {num_requests} requests")
    if times.size and (np.diff(times) < 0).any():
        raise VidurError(f"{who} returned arrival times that are not sorted")
    n = len(times)
    build = getattr(lengths, "build", None)
    if build is not None:
        table = build(len_rng, np.asarray(times, dtype=np.float64), num_requests)
        if table is not None:
            return table
    prompt, output = lengths.generate(len_rng, n)
    return RequestTable(
        arrival=times,
        prompt=np.asarray(prompt, dtype=np.int64),
        output=np.asarray(output, dtype=np.int64),
    )
