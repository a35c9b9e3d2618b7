"""Built-in arrival processes: poisson, gamma, static, trace.

Renewal processes (poisson, gamma) start at time 0 and place the first
request after the first gap, so the number of arrivals in [0, T) has mean
``qps * T``.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.workload import _checks as ck
from vidur.workload.base import ArrivalProcess
from vidur.workload.trace import read_arrivals

A = ck.ARRIVAL
_MAX_ARRIVALS = 100_000_000


def _check_request(num_requests, duration) -> tuple[int | None, float | None]:
    ck.exactly_one(num_requests, duration)
    if num_requests is not None:
        return ck.check_count(num_requests), None
    return None, ck.check_duration(duration)


def renewal_times(
    rng: np.random.Generator,
    gaps: Callable[[np.random.Generator, int], np.ndarray],
    mean_gap: float,
    num_requests: int | None,
    duration: float | None,
) -> np.ndarray:
    """Arrival times of a renewal process: cumulative sums of ``gaps(rng, k)``.

    With ``num_requests`` draw exactly that many gaps; with ``duration`` draw
    in chunks until the running time reaches ``duration`` and keep the
    arrivals in [0, duration).
    """
    num_requests, duration = _check_request(num_requests, duration)
    if num_requests is not None:
        return np.cumsum(gaps(rng, num_requests), dtype=np.float64)
    expected = duration / mean_gap
    chunk = int(min(expected + 4.0 * math.sqrt(expected) + 16, 1 << 24))
    parts: list[np.ndarray] = []
    now = 0.0
    while now < duration:
        times = now + np.cumsum(gaps(rng, chunk), dtype=np.float64)
        parts.append(times)
        now = float(times[-1])
    times = np.concatenate(parts)
    return times[: np.searchsorted(times, duration, side="left")]


class PoissonArrivals(ArrivalProcess):
    """Poisson arrivals: independent exponential gaps with mean ``1/qps`` (not truncated)."""

    name: ClassVar[str] = "poisson"

    @attrs.frozen
    class Config:
        qps: float = attrs.field(default=1.0, validator=ck.positive(A))

    def __init__(self, config: Config | None = None):
        super().__init__(config if config is not None else self.Config())

    @property
    def mean_qps(self) -> float:
        return float(self.config.qps)

    def generate(self, rng, num_requests=None, duration=None) -> np.ndarray:
        scale = 1.0 / self.config.qps
        return renewal_times(rng, lambda r, k: r.exponential(scale, size=k), scale, num_requests, duration)



class GammaArrivals(ArrivalProcess):
    """Gamma-distributed gaps with mean ``1/qps`` and coefficient of variation ``cv``.

    ``cv = 1`` is Poisson; ``cv > 1`` is burstier, ``cv < 1`` more regular.
    """

    name: ClassVar[str] = "gamma"

    @attrs.frozen
    class Config:
        qps: float = attrs.field(default=1.0, validator=ck.positive(A))
        cv: float = attrs.field(default=1.0, validator=ck.positive(A))

    def __init__(self, config: Config | None = None):
        super().__init__(config if config is not None else self.Config())

    @property
    def mean_qps(self) -> float:
        return float(self.config.qps)

    def generate(self, rng, num_requests=None, duration=None) -> np.ndarray:
        shape = 1.0 / (self.config.cv**2)
        mean_gap = 1.0 / self.config.qps
        scale = mean_gap / shape
        return renewal_times(rng, lambda r, k: r.gamma(shape, scale, size=k), mean_gap, num_requests, duration)



class StaticArrivals(ArrivalProcess):
    """Every request arrives at t = 0 (offline batch); it has no rate."""

    name: ClassVar[str] = "static"

    @attrs.frozen
    class Config:
        pass

    def __init__(self, config: Config | None = None):
        super().__init__(config if config is not None else self.Config())

    def generate(self, rng, num_requests=None, duration=None) -> np.ndarray:
        ck.exactly_one(num_requests, duration)
        if num_requests is None:
            raise VidurError(
                "the static arrival process puts every request at t=0, so a duration does not "
                "say how many; give num_requests instead"
            )
        return np.zeros(ck.check_count(num_requests), dtype=np.float64)



class TraceArrivals(ArrivalProcess):
    """Replays the ``arrived_at`` column of a CSV trace, shifted to start at 0.

    ``time_scale`` multiplies every time (2.0 = half the rate); ``qps``, if
    set, rescales the trace to that mean rate instead (set one, not both).
    The mean rate of a trace is ``(rows - 1) / (last - first arrival)``.
    When more requests (or a longer duration) are asked for than the trace
    holds, ``on_short: cycle`` replays it again after the last arrival plus
    one mean gap (keeping the mean rate); ``on_short: error`` refuses.
    """

    name: ClassVar[str] = "trace"

    @attrs.frozen
    class Config:
        path: str = attrs.field(default="", validator=ck.is_str(A))
        time_scale: float = attrs.field(default=1.0, validator=ck.positive(A))
        qps: float | None = attrs.field(default=None, validator=ck.optional_positive(A))
        on_short: str = attrs.field(default="cycle", validator=ck.one_of(A, ("cycle", "error")))

    def __init__(self, config: Config | None = None):
        config = config if config is not None else self.Config()
        super().__init__(config)
        if not config.path:
            raise VidurError(f"{A}.path is required for the trace arrival process; set it to a CSV "
                             "with an arrived_at column")
        if config.qps is not None and config.time_scale != 1.0:
            raise VidurError(f"set {A}.qps or {A}.time_scale, not both (qps={config.qps}, "
                             f"time_scale={config.time_scale})")
        self._base()  # fail early on a bad file

    def _base(self) -> tuple[np.ndarray, float]:
        """Shifted, scaled arrival times and the mean gap used when cycling."""
        cfg = self.config
        raw = read_arrivals(cfg.path)
        times = raw - raw[0]
        span = float(times[-1])
        n = len(times)
        if cfg.qps is not None:
            if n > 1 and span > 0:
                times = times * ((n - 1) / span / cfg.qps)
                return times, 1.0 / cfg.qps
            if n > 1:
                raise VidurError(
                    f"trace {cfg.path}: every arrival has the same time, so it has no rate to rescale "
                    f"to {A}.qps={cfg.qps}; drop {A}.qps or use another trace"
                )
            return times, 1.0 / cfg.qps  # one row: repeat it every 1/qps
        times = times * cfg.time_scale
        return times, (float(times[-1]) / (n - 1) if n > 1 else 0.0)

    @property
    def mean_qps(self) -> float | None:
        """The trace's mean rate after scaling (None if it has no rate)."""
        _, gap = self._base()
        return 1.0 / gap if gap > 0 else None

    def _short(self, have: int, want: str) -> None:
        raise VidurError(
            f"trace {self.config.path} has {have} arrivals but {want} were asked for; "
            f"set {A}.on_short: cycle or ask for fewer requests"
        )

    def generate(self, rng, num_requests=None, duration=None) -> np.ndarray:
        num_requests, duration = _check_request(num_requests, duration)
        times, gap = self._base()
        n = len(times)
        period = float(times[-1]) + gap
        if num_requests is not None:
            if num_requests <= n:
                return np.array(times[:num_requests], dtype=np.float64)
            if self.config.on_short == "error":
                self._short(n, str(num_requests))
            cycles = -(-num_requests // n)
        else:
            if float(times[-1]) < duration and self.config.on_short == "error":
                raise VidurError(
                    f"trace {self.config.path} ends at {float(times[-1]):g} s, before the duration of "
                    f"{duration:g} s; set {A}.on_short: cycle or use a shorter duration"
                )
            if period <= 0:
                raise VidurError(
                    f"trace {self.config.path}: every arrival has the same time, so it cannot fill "
                    f"a duration of {duration:g} s; give num_requests instead"
                )
            cycles = max(1, math.ceil(duration / period))
            if cycles * n > _MAX_ARRIVALS:
                raise VidurError(
                    f"trace {self.config.path} replayed for {duration:g} s gives over {_MAX_ARRIVALS} "
                    "arrivals; use a shorter duration or a lower qps"
                )
        offsets = np.arange(cycles, dtype=np.float64) * period
        out = (offsets[:, None] + times[None, :]).ravel()
        if num_requests is not None:
            return out[:num_requests]
        return out[: np.searchsorted(out, duration, side="left")]


def arrival_at_rate(arrival, qps: float) -> dict:
    """The raw ``workload.arrival`` mapping ``arrival`` (a mapping or a bare
    name; None is poisson) at mean rate ``qps``: the one way search and
    sweep set a rate. A rate replaces a ``time_scale``; whether the process
    accepts a ``qps`` is checked when the scenario is loaded."""
    if arrival is None:
        arrival = {"name": "poisson"}
    elif isinstance(arrival, str):
        arrival = {"name": arrival}
    out = dict(arrival)
    out.pop("time_scale", None)
    out["qps"] = float(qps)
    return out

