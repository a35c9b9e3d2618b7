"""Binary search for the highest QPS at which every SLO holds.

Stages of increasing probe size ("fidelity"): the first, with small probes,
brackets the answer by expanding geometrically from a first guess and
bisects to a coarse tolerance; each later stage re-establishes a bracket
with its own (larger) probes around the previous answer and bisects to its
tolerance. The final bracket ``[lo, hi]`` comes from full-size probes only:
``lo`` passed, ``hi`` failed and ``hi / lo - 1 <= tolerance``. The answer is
``lo``. Bisection is geometric (``sqrt(lo * hi)``), so the relative
precision gained per probe is the same at any scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

#: ``probe(qps, stage_index) -> met``
ProbeFn = Callable[[float, int], bool]


@attrs.define
class MaxQPS:
    """The outcome: ``status`` is ``ok`` (bracketed), ``capped`` (passes at
    ``max_qps``), ``infeasible`` (fails at ``min_qps``) or ``unresolved`` (ran
    out of probes; ``lo`` is the best passing QPS found, 0 if none)."""

    status: str
    lo: float  # highest passing QPS at full size (0.0 when none)
    hi: float | None  # lowest failing QPS at full size above lo (None when none)
    probes: int


class _OutOfProbes(Exception):
    pass


class _Bracket:
    """The search state: probe counter and the current passing/failing rates."""

    def __init__(self, probe: ProbeFn, max_probes: int):
        self.probe, self.max_probes, self.used = probe, max_probes, 0
        self.lo: float | None = None
        self.hi: float | None = None

    def test(self, q: float, stage: int) -> bool:
        if self.used >= self.max_probes:
            raise _OutOfProbes
        self.used += 1
        ok = bool(self.probe(q, stage))
        if ok:
            self.lo = q
        else:
            self.hi = q
        return ok

    def expand(self, stage: int, q0: float, step: float, lo_lim: float, hi_lim: float, grow: bool) -> None:
        """From ``q0`` step by ``step`` (squared after each step when ``grow``)
        until the verdict flips or a range limit is reached."""
        self.lo = self.hi = None
        q = min(max(q0, lo_lim), hi_lim)
        if self.test(q, stage):
            while self.lo < hi_lim and self.test(min(self.lo * step, hi_lim), stage):
                step = step * step if grow else step
        else:
            while self.hi > lo_lim and not self.test(max(self.hi / step, lo_lim), stage):
                step = step * step if grow else step

    def bisect(self, stage: int, tol: float) -> None:
        while self.hi / self.lo - 1.0 > tol:
            self.test(math.sqrt(self.lo * self.hi), stage)


def find_max_qps(
    probe: ProbeFn,
    *,
    initial_qps: float,
    tolerances: list[float],
    expansion: float = 1.25,
    min_qps: float = 0.01,
    max_qps: float = 1e4,
    max_probes: int = 40,
) -> MaxQPS:
    """Search with ``len(tolerances)`` stages; stage ``i`` calls ``probe(q, i)``.

    The first stage brackets by steps of ``expansion``; later stages start
    from the previous answer and step by ``1 + previous tolerance``. Each
    step is the square of the one before while the verdict does not flip,
    so a poor first guess costs only O(log log) extra probes.
    """
    b = _Bracket(probe, max_probes)
    last = len(tolerances) - 1
    guess, prev_tol = initial_qps, None
    try:
        for stage, tol in enumerate(tolerances):
            step = expansion if prev_tol is None else 1.0 + prev_tol
            b.expand(stage, guess, step, min_qps, max_qps, grow=True)
            prev_tol = tol
            if b.lo is None:  # fails even at min_qps
                if stage == last:
                    return MaxQPS("infeasible", 0.0, b.hi, b.used)
                guess = min_qps
                continue
            if b.hi is None:  # passes at max_qps
                if stage == last:
                    return MaxQPS("capped", b.lo, None, b.used)
                guess = b.lo
                continue
            b.bisect(stage, tol)
            guess = b.lo
    except _OutOfProbes:
        # only full-size verdicts count
        if stage == last and b.lo is not None:
            return MaxQPS("unresolved", b.lo, b.hi, b.used)
        return MaxQPS("unresolved", 0.0, None, b.used)
    return MaxQPS("ok", b.lo, b.hi, b.used)


def stage_tolerances(tolerance: float, coarse_fraction: float, coarse_tolerance: float) -> tuple[list[float], list[float]]:
    """``(fractions, tolerances)`` of the stages for the given options."""
    if coarse_fraction > 0 and coarse_tolerance > tolerance:
        return [coarse_fraction, 1.0], [coarse_tolerance, tolerance]
    return [1.0], [tolerance]


def describe(result: MaxQPS) -> dict[str, Any]:
    return attrs.asdict(result)
