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

:func:`mixed_seconds` extends the same reading to the seconds that carry prompt tokens
(prefill chunks batched with decodes): it says how well the estimator prices mixed steps,
and :func:`prompt_token_cost` what a prompt token really costs on top of the decodes
against what the estimator charges for it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import attrs
import numpy as np

from vidur.estimate.base import BatchShape
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


def decode_seconds(run: RealRun, estimator, *, min_seqs: int = 4, samples=None, overlap: bool = False) -> list[DecodeSecond]:
    """:func:`decode_samples` with ``estimator``'s decode step for each (``samples``: precomputed):
    device + host, or as the simulator prices it under async scheduling (``overlap``: max of the two)."""
    rows = decode_samples(run, min_seqs=min_seqs) if samples is None else samples
    if not overlap:
        return [DecodeSecond(t, k, kv, real, float(estimator.decode_iteration_time(k, kv))) for t, k, kv, real in rows]
    return [DecodeSecond(t, k, kv, real, step_time(estimator, BatchShape(num_decode=k, decode_kv=kv), overlap=True))
            for t, k, kv, real in rows]


def step_time(estimator, shape: BatchShape, *, overlap: bool = False) -> float:
    """One iteration's wall time as the simulator prices it (:mod:`vidur.engine.loop`):
    device + host, or ``max(device, host)`` when the engine overlaps them (``overlap``: vLLM V1's
    async scheduling, the replica's ``ReplicaState.overlap``)."""
    fwd = float(estimator.forward_time(shape))
    cpu = float(estimator.cpu_overhead(shape.num_seqs))
    return max(fwd, cpu) if overlap else fwd + cpu


def _timeseries(run: RealRun) -> np.ndarray | None:
    """Rows ``(t, prompt_throughput, gen_throughput, running, waiting)`` of the run's
    ``timeseries.csv`` (None without one; unreadable rows are skipped)."""
    path = Path(run.path) / "timeseries.csv"
    if not path.is_file():
        return None
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            try:
                rows.append([float(row[k]) for k in ("t", "prompt_throughput", "gen_throughput", "running", "waiting")])
            except (KeyError, TypeError, ValueError):
                continue
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def clock_offset(run: RealRun, rows: np.ndarray | None = None) -> tuple[float, float]:
    """``(offset, mismatch)``: where the time series' seconds lie on the requests' clock.

    vLLM counts a request's whole prompt (cached tokens included) as prompt throughput in the
    iteration that produces its first token, so the row at ``t`` holds the prompts of the
    requests whose first token falls in ``[t - 1 + offset, t + offset)`` (request time: seconds
    from the first arrival). The offset (the harness starts its ticks a little off the first
    arrival; -0.13 s and -0.08 s on the shared runs) is the one in [-1, 1] s, by 0.01 s, that
    matches the most prompt tokens (the middle of the best ones); ``mismatch`` is the share of
    prompt tokens that still land in another second (0 on the shared runs: an exact match).
    """
    rows = _timeseries(run) if rows is None else rows
    total = float(rows[:, 1].sum()) if rows is not None and len(rows) else 0.0
    if total <= 0:
        return 0.0, 1.0
    first = run.table.arrival + run.ttft
    prompt = np.asarray(run.table.prompt, dtype=np.float64)
    t = rows[:, 0]
    order = np.argsort(t)
    t, p = t[order], rows[order, 1]
    if np.any(np.diff(t) < 1.0 - 1e-9):
        return 0.0, 1.0  # not one row per second
    offsets = np.round(np.arange(-100, 101) / 100.0, 2)
    miss = np.empty(len(offsets))
    for i, off in enumerate(offsets):
        # prompts whose first token falls in each row's second; the rest (outside every row) miss
        idx = np.searchsorted(t + off, first, side="right")  # first < t[idx] + off
        inside = (idx < len(t))
        inside[inside] &= first[inside] >= t[idx[inside]] - 1.0 + off
        got = np.bincount(idx[inside], weights=prompt[inside], minlength=len(t))
        miss[i] = np.abs(got - p).sum() + prompt[~inside].sum()
    best = np.flatnonzero(miss <= miss.min() + 1e-9)
    k = int(best[len(best) // 2])
    return float(offsets[k]), float(min(1.0, miss[k] / (2.0 * total)))


@attrs.frozen
class MixedSample:
    """One saturated second with prompt tokens, rebuilt from the run (no estimator involved).

    ``t``: the time-series row; ``num_steps``: engine steps in it; ``num_decode`` /
    ``decode_kv``: the decoding batch (time average over the second; Σ(ctx + 1)); ``prompts``:
    the prompt lengths whose prefill ended in it, in first-token order; ``running``: the
    engine's count at the tick."""

    t: float
    num_steps: float
    num_decode: int
    decode_kv: int
    prompts: tuple[int, ...]
    running: int

    @property
    def prompt_tokens(self) -> int:
        return int(sum(self.prompts))


@attrs.frozen
class MixedSecond:
    """A :class:`MixedSample` priced: ``prefill_steps`` of its steps carry the prompt chunks
    (packed as :func:`prefill_steps` does), ``decode_step`` is the estimator's decode-only step
    of its batch, ``estimated`` the estimator's time for all its steps (s); the real second is
    1 s (the engine is busy throughout), so ``estimated`` is also estimated step / real step."""

    sample: MixedSample
    prefill_steps: int
    decode_step: float
    estimated: float
    real: float = 1.0

    @property
    def ratio(self) -> float:
        return self.estimated / self.real


def mixed_samples(
    run: RealRun, *, min_seqs: int = 4, points: int = 8, max_num_seqs: int | None = None,
    max_mismatch: float = 0.05, offset: float | None = None,
) -> list[MixedSample]:
    """The saturated seconds of ``run`` that carry prompt tokens, with how many steps ran in each
    and what they held (none without a ``timeseries.csv``, or when its prompt tokens do not match
    the requests' prompts at first token within ``max_mismatch``: :func:`clock_offset`; ``offset``
    given: the time series' seconds are ``[t - 1 + offset, t + offset)`` on the requests' clock).

    Assumptions, each a source of noise:

    - Saturated (``waiting > 0`` or ``running`` at ``max_num_seqs``, and at least ``min_seqs``
      decoding throughout): the engine steps back to back, so the second's steps sum to 1 s
      (host gaps between steps are part of a real step, as they are of a simulated one).
    - A request decodes from its first token to its last at a steady rate (its context grows
      linearly); the decoding batch is averaged over ``points`` instants of the second, so a
      batch that changes within the second is priced at its mean. Preempted requests are not
      seen: a second whose mean decoding count is off the engine's ``running`` by more than 10 %
      (running also counts the requests in prefill) is skipped.
    - Steps: every step emits one token per decoding request and one per request whose prefill
      ends (its first token), so ``num_steps = (generation tokens - first tokens) / decoding``.
      The mean over the second weighs long steps more than a mean over steps would.
    - Prompt tokens: vLLM counts the whole prompt in the second of its first token (checked
      against the requests by :func:`clock_offset`), so chunks computed in the second before
      land in this one, and cached prefix tokens count as computed ones (the runs do not
      record prefix hits; the replay, without token ids, models none either).
    """
    rows = _timeseries(run)
    if rows is None or not len(rows):
        return []
    if offset is None:
        offset, mismatch = clock_offset(run, rows)
        if mismatch > max_mismatch:
            return []
    if max_num_seqs is None:
        from vidur.calibration.replay import engine_settings

        max_num_seqs = engine_settings(run)["max_num_seqs"]
    first = run.table.arrival + run.ttft
    last = run.table.arrival + run.e2e
    prompt = np.asarray(run.table.prompt, dtype=np.float64)
    output = np.asarray(run.table.output, dtype=np.float64)
    span = np.maximum(last - first, 1e-9)
    frac = (np.arange(points) + 0.5) / points
    out = []
    for t, p, g, n, w in rows:
        if p <= 0 or g <= 0 or not (w > 0 or n >= max_num_seqs):
            continue
        lo, hi = t - 1.0 + offset, t + offset
        new = (first >= lo) & (first < hi)
        ks, kvs = [], []
        for m in lo + frac:
            act = (first < m) & (last >= m)  # has its first token, not yet its last
            ctx = prompt[act] + (m - first[act]) / span[act] * (output[act] - 1.0)
            ks.append(int(act.sum()))
            kvs.append(float(ctx.sum()) + ks[-1])
        k = float(np.mean(ks))
        if min(ks) < min_seqs or abs(k - n) > 0.1 * n:
            continue
        steps = (g - int(new.sum())) / k
        if steps <= 0:
            continue
        order = np.argsort(first[new], kind="stable")
        prompts = tuple(int(x) for x in prompt[new][order])
        if int(sum(prompts)) != int(p):
            continue  # the second's prompts are not the requests' (clock offset off here)
        kd = max(1, int(round(k)))
        out.append(MixedSample(float(t), float(steps), kd, int(round(np.mean(kvs) / k * kd)), prompts, int(n)))
    return out


def prefill_steps(prompts, budget: int, num_decode: int, max_num_seqs: int, *, packed: bool = True) -> list[list[tuple[int, int]]]:
    """The prefill chunks ``[(q, ctx), ...]`` of each step that carries prompt tokens.

    vLLM V1 (``vllm/v1/core/sched/scheduler.py``) gives every step one token budget
    (``max_num_batched_tokens``): the ``num_decode`` running decodes take one token each, and
    the rest goes to prefill chunks, oldest first, as long as the step has a sequence slot
    (``max_num_seqs``). ``packed``: the prompts follow one another without a gap (a new prompt
    fills what the previous one left of a step): the fewest prefill steps, right when prompts
    wait. Otherwise each prompt starts on a step of its own (right when each is admitted alone
    as a slot frees): the most.
    """
    room = max(1, int(budget) - int(num_decode))
    slots = max(1, int(max_num_seqs) - int(num_decode))
    steps: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    left = room
    for length in prompts:
        if cur and (not packed or len(cur) >= slots):
            steps.append(cur)
            cur, left = [], room
        done = 0
        while done < length:
            q = min(int(length) - done, left)
            cur.append((q, done))
            done += q
            left -= q
            if left == 0:
                steps.append(cur)
                cur, left = [], room
    if cur:
        steps.append(cur)
    return steps


def mixed_seconds(
    run: RealRun, estimator, *, overlap: bool = False, packed: bool = True, samples=None, budget: int | None = None,
    max_num_seqs: int | None = None,
) -> list[MixedSecond]:
    """:func:`mixed_samples` priced by ``estimator``: each second's ``num_steps`` steps hold its
    decoding batch; the prompt chunks (:func:`prefill_steps` with the run's
    ``max_num_batched_tokens`` and ``max_num_seqs``) ride on the first of them, the others are
    decode-only. Steps are priced as the simulator prices them (:func:`step_time`; ``overlap``:
    host work hidden behind the device). ``estimated`` = ``num_steps`` decode steps plus what each
    chunk-carrying step costs over a decode step, so a second whose chunks need more steps than it
    had (chunks of the second before counted in this one) adds no decode steps that did not run."""
    if budget is None or max_num_seqs is None:
        from vidur.calibration.replay import engine_settings

        e = engine_settings(run)
        budget = e["max_num_batched_tokens"] if budget is None else budget
        max_num_seqs = e["max_num_seqs"] if max_num_seqs is None else max_num_seqs
    rows = mixed_samples(run, max_num_seqs=max_num_seqs) if samples is None else samples
    out = []
    for s in rows:
        decode = step_time(estimator, BatchShape(num_decode=s.num_decode, decode_kv=s.decode_kv), overlap=overlap)
        chunks = prefill_steps(s.prompts, budget, s.num_decode, max_num_seqs, packed=packed)
        total = s.num_steps * decode
        for step in chunks:
            shape = BatchShape(num_decode=s.num_decode, decode_kv=s.decode_kv)
            for q, ctx in step:
                shape.add_prefill(q, ctx)
            total += step_time(estimator, shape, overlap=overlap) - decode
        out.append(MixedSecond(s, len(chunks), decode, total))
    return out


@attrs.frozen
class PromptCost:
    """Marginal seconds per prompt token over the mixed seconds, least squares without intercept
    (:func:`prompt_token_cost`): ``real`` (± ``real_se``, its standard error from the residuals)
    and ``estimated`` by the estimator on the same seconds; ``num_seconds`` used."""

    real: float
    real_se: float
    estimated: float
    num_seconds: int


def prompt_token_cost(seconds: list[MixedSecond], *, decode_scale: float = 1.0) -> PromptCost | None:
    """Fit ``real second = num_steps * decode_step / decode_scale + prompt_tokens * c`` (c: the real
    marginal cost of a prompt token, decode steps taken as the estimator prices them, divided by
    ``decode_scale``: pass the decode-only seconds' estimated / real to take the real decode step
    instead), and the same with the estimator's second on the left for its own marginal cost.
    None without any second. Noise: ``c`` is what is left of a second after its decode steps, so
    an error of x % on the decode steps moves it by x % of their share of the second over the
    second's prompt tokens."""
    if not seconds:
        return None
    P = np.array([s.sample.prompt_tokens for s in seconds], dtype=np.float64)
    D = np.array([s.sample.num_steps * s.decode_step for s in seconds]) / decode_scale
    real = np.array([s.real for s in seconds])
    est = np.array([s.estimated for s in seconds])
    D_est = np.array([s.sample.num_steps * s.decode_step for s in seconds])
    pp = float(P @ P)
    c = float(P @ (real - D)) / pp
    c_est = float(P @ (est - D_est)) / pp
    resid = real - D - P * c
    se = float(np.sqrt(resid @ resid / max(1, len(P) - 1) / pp))
    return PromptCost(c, se, c_est, len(P))


def step_error(seconds: list[DecodeSecond]) -> float | None:
    """Median |log(estimated / real)| over the decode-only seconds (None without any)."""
    if not seconds:
        return None
    return float(np.median([abs(np.log(s.estimated / s.real)) for s in seconds]))
