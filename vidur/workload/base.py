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

    def with_qps(self, qps: float):
        """A copy of this process at another mean rate (used by capacity search).

        Raise :class:`vidur.errors.VidurError` if the process has no rate."""
        raise NotImplementedError


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
