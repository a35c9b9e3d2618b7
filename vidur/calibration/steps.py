"""Decode-only step times read off a real run's per-second time series.

A real run's per-request timestamps say nothing about single iterations, but its
``timeseries.csv`` does in the seconds when no prompt token was processed: then every
step is a decode step of about ``running`` sequences, and one step lasts
``running / generation throughput`` seconds. The batch's KV context at that second is
rebuilt from the requests (prompt + the share of its output produced so far, assuming a
steady rate between its first and last token). Comparing those steps with the
estimator's :meth:`~vidur.estimate.base.RuntimeEstimator.decode_iteration_time` for the
same batch separates the per-iteration cost model from queueing, which amplifies
throughput errors into TTFT and E2E.
"""

from __future__ import annotations

import csv
from pathlib import Path

import attrs
import numpy as np

from vidur.validate.real_runs import RealRun


@attrs.frozen
class DecodeSecond:
    """One prompt-free second: ``t`` (s from the first arrival), ``num_seqs`` decoding,
    ``decode_kv`` (their summed context + 1 each), the ``real`` step and the ``estimated`` one (s)."""

    t: float
    num_seqs: int
    decode_kv: int
    real: float
    estimated: float


def decode_samples(run: RealRun, *, min_seqs: int = 4) -> list[tuple[float, int, int, float]]:
    """``(t, num_seqs, decode_kv, real step)`` of the prompt-free seconds of ``run`` with at least
    ``min_seqs`` running, where the requests decoding mid-second agree with the engine's
    ``running`` count within 10 % (none without a ``timeseries.csv``)."""
    path = Path(run.path) / "timeseries.csv"
    if not path.is_file():
        return []
    first = run.table.arrival + run.ttft
    last = run.table.arrival + run.e2e
    prompt = np.asarray(run.table.prompt, dtype=np.float64)
    output = np.asarray(run.table.output, dtype=np.float64)
    out = []
    with path.open() as f:
        for row in csv.DictReader(f):
            try:
                t, p, g, n = (float(row[k]) for k in ("t", "prompt_throughput", "gen_throughput", "running"))
            except (KeyError, ValueError):
                continue
            if p != 0 or g <= 0 or n < min_seqs:
                continue
            mid = t - 0.5
            act = (first <= mid) & (last >= mid)
            k = int(act.sum())
            if k == 0 or abs(k - n) > 0.1 * n:
                continue
            span = np.maximum(last[act] - first[act], 1e-9)
            ctx = prompt[act] + (mid - first[act]) / span * output[act]
            out.append((t, k, int(ctx.sum()) + k, n / g))
    return out


def decode_seconds(run: RealRun, estimator, *, min_seqs: int = 4, samples=None) -> list[DecodeSecond]:
    """:func:`decode_samples` with ``estimator``'s decode step for each (``samples``: precomputed)."""
    rows = decode_samples(run, min_seqs=min_seqs) if samples is None else samples
    return [DecodeSecond(t, k, kv, real, float(estimator.decode_iteration_time(k, kv))) for t, k, kv, real in rows]


def step_error(seconds: list[DecodeSecond]) -> float | None:
    """Median |log(estimated / real)| over the decode-only seconds (None without any)."""
    if not seconds:
        return None
    return float(np.median([abs(np.log(s.estimated / s.real)) for s in seconds]))
