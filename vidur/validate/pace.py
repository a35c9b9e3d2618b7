"""Is this host running at the pace the CPU profile recorded?

A CPU profile records, per shard, the time of a small *pace probe* (a decode
iteration of :data:`vidur.profile.cpu.PACE`) while it was taken
(``executor.machine_speed.pace_ms_median``). On a CPU the real side of
``vidur validate`` runs at whatever pace the host has now: another tenant's
load, another CPU model or a throttled clock moves every measured iteration
while the simulated side keeps the profile's times. :func:`measure_pace`
re-times the same probe on the validation's executor and :func:`pace_note`
turns the ratio into one line of the report when it is off by more than
:data:`TOLERANCE`, so that a validation error that is really the host's pace
is not read as the simulator's.
"""

from __future__ import annotations

import math
import statistics

#: |log(measured / recorded)| above log(1 + TOLERANCE) is reported
TOLERANCE = 0.15
#: seconds between pace probes during the real run (between two iterations, off the real side's clock)
PACE_EVERY_S = 0.5
#: pace probe calls (each a warm-up and two timed runs, as the profiler does); the median is kept
CALLS = 9


def recorded_pace(estimator) -> float | None:
    """The pace probe's median (ms) recorded in the estimator's CPU profile, or None."""
    profile = getattr(estimator, "profile", None)
    if profile is None:
        return None
    tp = getattr(estimator, "tp", 1)
    shard = profile.metadata.get("shards", {}).get(str(tp), {})
    speed = (shard.get("executor") or {}).get("machine_speed") or {}
    ms = speed.get("pace_ms_median")
    return float(ms) if ms else None


def measure_pace(executor, calls: int = CALLS) -> float | None:
    """Median time (ms) of the profiler's pace probe on ``executor``; None when it does not fit its KV pool."""
    from vidur.errors import VidurError
    from vidur.profile.cpu import PACE

    _, batch, context = PACE
    samples = []
    try:
        for _ in range(calls):
            runs = executor.time_iteration([context] * batch, [], warmup=1, repeats=2)
            samples.append(statistics.median(sum(r.values()) for r in runs) * 1e3)
    except VidurError:  # the validation's KV pool is too small for the probe
        return None
    return statistics.median(samples)


def pace_report(recorded_ms: float | None, measured_ms: list[float | None]) -> dict | None:
    """The ``run.host_pace`` section: recorded and measured probe times and their ratio (None if unknown)."""
    got = [m for m in measured_ms if m]
    if not recorded_ms or not got:
        return None
    now = statistics.median(got)
    return {
        "recorded_ms": round(recorded_ms, 4),
        "measured_ms": [round(m, 4) for m in got],
        "ratio": round(now / recorded_ms, 3),
    }


def pace_note(pace: dict | None) -> str | None:
    """One line when the host ran the pace probe more than :data:`TOLERANCE` faster or slower than the profile."""
    if not pace:
        return None
    ratio = pace["ratio"]
    if abs(math.log(ratio)) <= math.log1p(TOLERANCE):
        return None
    way = "slower" if ratio > 1 else "faster"
    return (
        f"this host runs the profile's pace probe {ratio:.2f}x the recorded time ({way}: "
        f"{statistics.median(pace['measured_ms']):.3g} ms vs {pace['recorded_ms']:.3g} ms): the real side's times "
        f"move with it, so read the errors below as the host's pace, not the simulator's; validate on a quiet host "
        f"or re-profile on this one"
    )
