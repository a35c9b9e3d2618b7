"""Confidence intervals over seeds and paired t-tests, in plain Python (no scipy).

A simulation with a fixed seed is deterministic; its noise is the workload's
sampling noise, which only repeating the run over seeds shows. Over ``n``
seeds a metric's 95 % interval is ``mean ± t(0.975, n-1) · s / sqrt(n)``
(Student t, ``s`` the sample standard deviation). Two policies run on the
same request streams (same seeds) are compared by a **paired** t-test on the
per-seed differences, which removes the noise the two runs share.

The Student t distribution function is computed from the regularized
incomplete beta function, ``P(|T| > t) = I_x(df/2, 1/2)`` with
``x = df / (df + t²)``, evaluated by its continued fraction (modified Lentz
method); quantiles invert it by bisection. Accurate to about 1e-10, far
below what an interval over a handful of seeds needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

#: the confidence level of every interval vidur reports
LEVEL = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if not (a > 0 and b > 0):
        raise ValueError("betainc needs a > 0 and b > 0")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError("degrees of freedom must be > 0")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    half = 0.5 * t_sf2(t, df)
    return 1.0 - half if t >= 0 else half


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0 < p < 1``)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@attrs.frozen
class Interval:
    """A mean over ``n`` samples with its two-sided confidence interval.

    ``half`` is the half-width (None when ``n < 2``: one seed says nothing
    about noise); ``low``/``high`` are ``mean ∓ half``.
    """

    mean: float | None
    half: float | None
    n: int
    level: float = LEVEL

    @property
    def low(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean + self.half


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_interval(values: Sequence[float | None], level: float = LEVEL) -> Interval:
    """Mean and Student-t confidence interval of ``values`` (None/NaN left out)."""
    xs = _clean(values)
    n = len(xs)
    if n == 0:
        return Interval(None, None, 0, level)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, None, n, level)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    half = t_quantile(0.5 + level / 2.0, n - 1) * math.sqrt(var / n)
    return Interval(mean, half, n, level)


@attrs.frozen
class PairedTest:
    """A paired comparison of ``candidate − baseline`` over ``n`` common seeds.

    ``diff`` is the interval of the mean difference; ``relative`` the mean
    difference over the baseline's mean (None when that mean is 0);
    ``p_value`` the two-sided paired t-test's p-value (None when ``n < 2``;
    1.0 when every difference is 0, 0.0 when they are equal and non-zero).
    """

    diff: Interval
    relative: float | None
    p_value: float | None

    def significant(self, alpha: float = 1.0 - LEVEL) -> bool:
        """True when the difference is significant at level ``alpha``."""
        return self.p_value is not None and self.p_value < alpha


def paired_test(candidate: Sequence[float | None], baseline: Sequence[float | None], level: float = LEVEL) -> PairedTest:
    """Paired t-test of ``candidate`` against ``baseline`` (aligned by position, e.g. by seed).

    Pairs with a missing or non-finite value on either side are left out.
    """
    if len(candidate) != len(baseline):
        raise ValueError("paired samples differ in length")
    pairs = [
        (float(c), float(b)) for c, b in zip(candidate, baseline)
        if c is not None and b is not None and math.isfinite(float(c)) and math.isfinite(float(b))
    ]
    diffs = [c - b for c, b in pairs]
    iv = mean_interval(diffs, level)
    base_mean = math.fsum(b for _, b in pairs) / len(pairs) if pairs else None
    rel = iv.mean / base_mean if iv.mean is not None and base_mean else None
    p = None
    if iv.n >= 2:
        sd = math.sqrt(math.fsum((d - iv.mean) ** 2 for d in diffs) / (iv.n - 1))
        if sd == 0.0:
            p = 1.0 if iv.mean == 0.0 else 0.0
        else:
            p = t_sf2(iv.mean / (sd / math.sqrt(iv.n)), iv.n - 1)
    return PairedTest(iv, rel, p)
