"""Workload-generator interfaces: arrival processes and length generators."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np


class ArrivalProcess:
    """Generates request arrival times (seconds, non-decreasing, from 0).

    Subclasses set ``name`` and ``Config``. Randomness comes only from the
    ``rng`` passed in (one seeded ``numpy.random.Generator`` per run).
    """

    kind: ClassVar[str] = "arrival"
    name: ClassVar[str] = ""
    Config: ClassVar[type] = attrs.make_class("Config", {}, frozen=True)

    def __init__(self, config):
        self.config = config

    def generate(self, rng: np.random.Generator, num_requests: int | None, duration: float | None) -> np.ndarray:
        """Arrival times as float64. Exactly one of ``num_requests``/``duration`` is set;
        with ``duration``, return every arrival in [0, duration)."""
        raise NotImplementedError

    #: The mean rate in requests/s, or None if the process has none (the run
    #: budget uses it to size a duration). A process with a rate takes a
    #: ``qps`` Config field: search and sweep set it in the raw scenario, the
    #: one rate mechanism (:func:`vidur.workload.arrivals.arrival_at_rate`).
    mean_qps: float | None = None


class LengthGenerator:
    """Generates (prompt tokens, output tokens) per request.

    Subclasses set ``name`` and ``Config``.
    """

    kind: ClassVar[str] = "length"
    name: ClassVar[str] = ""
    Config: ClassVar[type] = attrs.make_class("Config", {}, frozen=True)

    def __init__(self, config):
        self.config = config

    def generate(self, rng: np.random.Generator, num_requests: int) -> tuple[np.ndarray, np.ndarray]:
        """Two int64 arrays (prompt, output), each ≥ 1, of length ``num_requests``."""
        raise NotImplementedError


class ContentGenerator(LengthGenerator):
    """A length generator that also says what requests contain (shared
    prefixes, sessions): it builds the whole request table.

    :meth:`build` gets the arrival process's times (for sessions: the
    session starts) and returns a
    :class:`~vidur.workload.workload.RequestTable` with ``content``
    (:mod:`vidur.workload.content`); it may return None to fall back to
    :meth:`generate` (a trace without block hashes).
    """

    def build(self, rng: np.random.Generator, arrivals: np.ndarray, num_requests: int | None):
        """The request table for these arrivals (at most ``num_requests`` rows when given)."""
        raise NotImplementedError

    def generate(self, rng: np.random.Generator, num_requests: int) -> tuple[np.ndarray, np.ndarray]:
        table = self.build(rng, np.zeros(num_requests), num_requests)
        return table.prompt, table.output
