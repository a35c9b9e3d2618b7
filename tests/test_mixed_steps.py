"""Mixed (prefill + decode) step times read off a real run's time series: vidur.calibration.steps."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.calibration.steps import (
    BatchShape,
    clock_offset,
    mixed_samples,
    mixed_seconds,
    prefill_steps,
    prompt_token_cost,
    step_time,
)
from vidur.testing.fakes import LinearConfig, LinearEstimator
from vidur.validate.real_runs import RealRun
from vidur.workload.workload import RequestTable

HEADER = "t,prompt_throughput,gen_throughput,running,waiting,kv_cache_pct\n"


def _run(path, arrival, prompt, output, first, last, rows, *, cap, budget) -> RealRun:
    path.mkdir(parents=True, exist_ok=True)
    (path / "timeseries.csv").write_text(HEADER + "".join(f"{t},{p},{g},{r},{w},0\n" for t, p, g, r, w in rows))
    table = RequestTable(arrival=np.asarray(arrival, float), prompt=np.asarray(prompt), output=np.asarray(output))
    first, last = np.asarray(first, float), np.asarray(last, float)
    tpot = (last - first) / np.maximum(np.asarray(output) - 1, 1)
    meta = {"engine_kwargs": {"max_num_seqs": cap, "max_num_batched_tokens": budget}}
    return RealRun("synthetic", str(path), table, first - table.arrival, tpot, last - table.arrival, meta)


def _toy_engine(rng, *, n, cap, budget, base, per_decode, per_prompt, shift, rate=40.0):
    """A toy vLLM V1 engine and what its harness would log: each step one token budget (decodes
    first, then prefill chunks, the running ones then the waiting, oldest first) under a sequence
    cap, lasting ``base + per_decode * decodes + per_prompt * prompt tokens``; the time series'
    row ``t`` covers request time ``[t - 1 + shift, t + shift)`` and counts each prompt whole in
    the second of its first token, as vLLM does."""
    arrival = np.concatenate([[0.0], np.cumsum(rng.exponential(1 / rate, n - 1))])
    prompt = rng.integers(30, 400, n)
    output = rng.integers(10, 80, n)
    first, last, admit = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.inf)
    prefilled, produced = np.zeros(n, int), np.zeros(n, int)
    running: list[int] = []
    waiting: deque[int] = deque()
    nxt, now, ends, gens = 0, 0.0, [], []
    while nxt < n or running or waiting:
        while nxt < n and arrival[nxt] <= now:
            waiting.append(nxt)
            nxt += 1
        if not running and not waiting:
            now = arrival[nxt]
            continue
        left = budget
        decodes = [r for r in running if prefilled[r] == prompt[r]]
        left -= len(decodes)
        chunks = []
        for r in running:
            if prefilled[r] < prompt[r] and left > 0:
                q = min(prompt[r] - prefilled[r], left)
                chunks.append((r, q))
                left -= q
        while waiting and len(running) < cap and left > 0:
            r = waiting.popleft()
            running.append(r)
            admit[r] = now
            q = min(prompt[r], left)
            chunks.append((r, q))
            left -= q
        now += base + per_decode * len(decodes) + per_prompt * sum(q for _, q in chunks)
        g = len(decodes)
        produced[decodes] += 1
        for r, q in chunks:
            prefilled[r] += q
            if prefilled[r] == prompt[r]:
                produced[r] += 1
                first[r] = now
                g += 1
        for r in list(running):
            if produced[r] == output[r]:
                last[r] = now
                running.remove(r)
        ends.append(now)
        gens.append(g)
    ends, gens = np.array(ends), np.array(gens)
    rows = []
    for t in range(0 if shift > 0 else 1, int(np.ceil(ends.max() - shift)) + 2):  # rows cover every first token
        lo, hi = t - 1 + shift, t + shift
        rows.append((
            float(t),
            float(prompt[(first >= lo) & (first < hi)].sum()),
            float(gens[(ends >= lo) & (ends < hi)].sum()),
            int(((admit <= hi) & (last > hi)).sum()),
            int(((arrival <= hi) & (admit > hi)).sum()),
        ))
    return arrival, prompt, output, first, last, rows


def test_mixed_second_rebuilt_exactly(tmp_path):
    """One saturated second with 4 decoding requests and two prompts (50 and 30 tokens) whose
    first tokens fall in it: 102 generation tokens = 25 steps x 4 decodes + 2 first tokens; the
    prompts ride on the first steps, packed into the budget left by the decodes."""
    # 4 decoders (prompt 100, 1001 outputs, first token at 1 s, last at 11 s) and 2 one-token requests
    arrival = [0.0] * 6
    prompt = [100, 100, 100, 100, 50, 30]
    output = [1001] * 4 + [1, 1]
    first = [1.0] * 4 + [5.3, 5.6]
    last = [11.0] * 4 + [5.3, 5.6]
    rows = [
        (3.0, 0.0, 400.0, 4, 1),   # no prompt tokens: decode-only
        (6.0, 80.0, 102.0, 4, 1),  # the mixed second [5, 6)
        (7.0, 0.0, 400.0, 4, 0),   # neither waiting nor at the cap: not saturated
    ]
    run = _run(tmp_path, arrival, prompt, output, first, last, rows, cap=8, budget=64)
    [s] = mixed_samples(run, offset=0.0)
    assert (s.t, s.num_steps, s.num_decode, s.prompts, s.prompt_tokens, s.running) == (6.0, 25.0, 4, (50, 30), 80, 4)
    assert s.decode_kv == 4 * (100 + 450 + 1)  # mean context: 4.5 s of the 10 s decoding 1000 tokens
    # packed: 60 tokens of room per step -> [(50, 0), (30's first 10, 0)], [(the other 20, 10)]
    assert prefill_steps(s.prompts, 64, 4, 8) == [[(50, 0), (10, 0)], [(20, 10)]]
    assert prefill_steps(s.prompts, 64, 4, 8, packed=False) == [[(50, 0)], [(30, 0)]]
    cfg = LinearConfig(base=1e-3, per_token=1e-4, per_kv=1e-8, per_pair=1e-9)
    est = LinearEstimator(cfg)
    [sec] = mixed_seconds(run, est, samples=[s])
    decode = BatchShape(num_decode=4, decode_kv=s.decode_kv)
    d = est.forward_time(decode) + cfg.base
    assert sec.decode_step == pytest.approx(d)
    assert sec.prefill_steps == 2
    step1 = BatchShape.from_lists([(50, 0), (10, 0)])
    step2 = BatchShape.from_lists([(20, 10)])
    extra = est.forward_time(step1) + est.forward_time(step2)  # the two steps' prefill parts (linear costs)
    assert sec.estimated == pytest.approx(25 * d + extra)
    assert sec.ratio == pytest.approx(sec.estimated)
    # with host overlap a step is max(device, host)
    [ov] = mixed_seconds(run, est, samples=[s], overlap=True)
    assert ov.decode_step == pytest.approx(max(est.forward_time(decode), cfg.base))
    assert step_time(est, decode, overlap=True) == pytest.approx(max(est.forward_time(decode), cfg.base))
    # the fit on one second: c = (1 s - 25 decode steps) / 80 real, the estimator's marginal cost on its side
    pc = prompt_token_cost([sec])
    assert pc.real == pytest.approx((1.0 - 25 * d) / 80)
    assert pc.estimated == pytest.approx(extra / 80)
    assert pc.num_seconds == 1
    assert prompt_token_cost([sec], decode_scale=2.0).real == pytest.approx((1.0 - 25 * d / 2) / 80)
    assert prompt_token_cost([]) is None


def test_mixed_samples_refuse_unmatched_prompt_counts(tmp_path):
    """A time series whose prompt tokens are not the requests' prompts at their first token
    (another harness, chunk-wise counts) is not read: no samples rather than wrong ones."""
    rows = [(6.0, 999.0, 102.0, 4, 1)]
    run = _run(tmp_path / "a", [0.0] * 5, [100] * 4 + [50], [1001] * 4 + [1], [1.0] * 4 + [5.3], [11.0] * 4 + [5.3],
               rows, cap=8, budget=64)
    assert clock_offset(run)[1] > 0.05
    assert mixed_samples(run) == []
    nothing = RealRun("none", str(tmp_path / "missing"), run.table, run.ttft, run.tpot, run.e2e, run.meta)
    assert mixed_samples(nothing) == []


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    budget=st.integers(16, 4096),
    decodes=st.integers(0, 64),
    cap=st.integers(1, 128),
    packed=st.booleans(),
)
def test_prefill_steps_conserve_prompts_within_budget(prompts, budget, decodes, cap, packed):
    """Every prompt token is in exactly one chunk, each prompt's chunks follow one another (each
    one's context = the tokens before it), no step exceeds the budget the decodes leave nor the
    free sequence slots, and packing never needs more steps than a step per prompt start."""
    steps = prefill_steps(prompts, budget, decodes, cap, packed=packed)
    room, slots = max(1, budget - decodes), max(1, cap - decodes)
    assert all(0 < sum(q for q, _ in s) <= room for s in steps)
    assert all(len(s) <= (slots if packed else 1) for s in steps)
    flat = [c for s in steps for c in s]
    i = 0
    for length in prompts:
        done = 0
        while done < length:
            q, ctx = flat[i]
            assert ctx == done
            done += q
            i += 1
        assert done == length
    assert i == len(flat)
    if packed and slots >= len(prompts):
        assert len(steps) == -(-sum(prompts) // room)
    assert len(prefill_steps(prompts, budget, decodes, cap, packed=True)) <= len(
        prefill_steps(prompts, budget, decodes, cap, packed=False))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), cost=st.floats(0.5, 3.0), shift=st.integers(-40, 40))
def test_toy_engine_prompt_cost_recovered(tmp_path_factory, seed, cost, shift):
    """On a toy engine whose prompt token costs ``cost`` times the decode token (known answer),
    with the time series off the request clock by ``shift`` centiseconds: the offset is found
    (within the 0.03 s its few prompts leave open), the real marginal cost is recovered within
    8 % and the estimator's own is its per-token price."""
    per_token = 2e-4
    rng = np.random.default_rng(seed)
    *reqs, rows = _toy_engine(rng, n=300, cap=16, budget=256, base=2e-3, per_decode=per_token,
                              per_prompt=per_token * cost, shift=shift / 100)
    run = _run(tmp_path_factory.mktemp("toy"), *reqs, rows, cap=16, budget=256)
    offset, mismatch = clock_offset(run)
    assert mismatch == 0.0 and offset == pytest.approx(shift / 100, abs=0.03)
    est = LinearEstimator(LinearConfig(base=2e-3, per_token=per_token, per_kv=0.0, per_pair=0.0))
    secs = mixed_seconds(run, est)
    assert len(secs) >= 3
    pc = prompt_token_cost(secs)
    assert pc.real == pytest.approx(per_token * cost, rel=0.08)
    assert pc.estimated == pytest.approx(per_token, rel=1e-9)


def test_toy_engine_priced_right_reads_as_right(tmp_path):
    """When the estimator prices the toy engine's steps exactly, the mixed seconds' estimated /
    real median is 1 within 5 % (what is left is the method's own noise)."""
    rng = np.random.default_rng(3)
    *reqs, rows = _toy_engine(rng, n=300, cap=16, budget=256, base=2e-3, per_decode=2e-4, per_prompt=2e-4, shift=-0.13)
    run = _run(tmp_path, *reqs, rows, cap=16, budget=256)
    est = LinearEstimator(LinearConfig(base=2e-3, per_token=2e-4, per_kv=0.0, per_pair=0.0))
    ratio = np.median([s.ratio for s in mixed_seconds(run, est)])
    assert ratio == pytest.approx(1.0, abs=0.05)
