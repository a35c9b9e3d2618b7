"""The engine's fast paths give exactly what stepping every iteration gives.

Issue #14 item 5 added two: short runs of a steady decode group go through a scalar loop
(:func:`vidur.engine.fastforward._scalar_run`; long ones are still priced as arrays), and a
prompt's chunks beside a steady decode group run in one event
(:func:`vidur.engine.fastforward.prefill_run`, when the policy's ``steady_prefill`` says so:
Sarathi). Checked three ways: Hypothesis over hand-made workloads (chunked prefill, bursts that
leave requests waiting, KV pressure that preempts, max_time cuts); whole run directories,
byte for byte, on small scenarios; and planted bugs in each path, which the comparison catches.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, SCENARIOS, need_shared
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm_v1 import VLLMV1Scheduler
from vidur.engine import fastforward
from vidur.testing.fakes import LinearConfig, LinearEstimator
from vidur.testing.harness import ReplicaHarness

POLICIES = {"sarathi": SarathiScheduler, "vllm_v1": VLLMV1Scheduler}


def _config(name: str, chunk: int, max_batch: int):
    if name == "sarathi":
        return SarathiScheduler.Config(chunk_size=chunk, max_batch_size=max_batch)
    return VLLMV1Scheduler.Config(max_num_batched_tokens=chunk, max_num_seqs=max_batch, prefix_caching=False)


def run(name, reqs, *, fast, chunk=16, max_batch=4, num_blocks=40, block_size=4, max_time=None, base=1e-3,
        per_kv=1e-8):
    """``per_kv < 0``: iterations get shorter as the KV grows (the array path's guess of how many
    repetitions fit before the next arrival falls short and is doubled)."""
    est = LinearEstimator(LinearConfig(base=base, per_kv=per_kv))
    h = ReplicaHarness(POLICIES[name], _config(name, chunk, max_batch), num_blocks=num_blocks,
                       block_size=block_size, fast_forward=fast, estimator=est)
    t = 0.0
    for gap, p, o in reqs:
        t += gap
        h.add(p, o, at=t)
    h.run(max_time=max_time)
    return h


def outcome(h):
    """Everything a run leaves: per-request timelines and progress, batch rows, ITL samples."""
    reqs = [(r.first_scheduled, r.first_token, r.last_token, r.completion, r.preemptions, r.recomputed, r.kv_len)
            for r in h.requests]
    cols, _ = h.loop.batches.to_columns()
    v, n = h.loop.itl.to_arrays()
    return reqs, {k: c.tolist() for k, c in cols.items()}, v.tolist(), n.tolist(), h.loop.now


workloads = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 1e-4, 0.002, 0.01, 0.05]),  # gap to the previous arrival (bursts too)
        st.integers(min_value=1, max_value=90),  # prompt: several chunks
        st.integers(min_value=1, max_value=60),  # output
    ),
    min_size=1,
    max_size=20,
)


@pytest.mark.parametrize("name", sorted(POLICIES))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=workloads,
    chunk=st.sampled_from([4, 8, 16, 64]),
    max_batch=st.integers(min_value=1, max_value=8),
    num_blocks=st.integers(min_value=24, max_value=120),  # the low end preempts
    block_size=st.sampled_from([1, 4, 16]),
    max_time=st.sampled_from([None, 0.01, 0.02, 0.05, 0.1, 0.3]),
    base=st.sampled_from([1e-3, 0.0]),
)
def test_fast_paths_equal_stepping(name, reqs, chunk, max_batch, num_blocks, block_size, max_time, base):
    if max(p + o for _, p, o in reqs) > num_blocks * block_size:
        num_blocks = -(-max(p + o for _, p, o in reqs) // block_size)  # every request fits alone
    kw = dict(chunk=chunk, max_batch=max_batch, num_blocks=num_blocks, block_size=block_size, max_time=max_time,
              base=base)
    assert outcome(run(name, reqs, fast=True, **kw)) == outcome(run(name, reqs, fast=False, **kw))


def _seeded_cases(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        reqs = [(float(rng.choice([0.0, 0.0, 1e-4, 0.002, 0.01, 0.05])), int(rng.integers(1, 91)), int(rng.integers(1, 61)))
                for _ in range(int(rng.integers(1, 21)))]
        kw = dict(chunk=int(rng.choice([4, 8, 16, 64])), max_batch=int(rng.integers(1, 9)),
                  num_blocks=int(rng.integers(24, 121)), block_size=int(rng.choice([1, 4, 16])),
                  max_time=[None, 0.01, 0.02, 0.05, 0.1, 0.3][int(rng.integers(6))], base=float(rng.choice([1e-3, 0.0])))
        if kw["base"] and rng.random() < 0.5:
            kw["per_kv"] = -1e-7  # iterations up to a third shorter at the largest KV here, never below 0
        need = max(p + o for _, p, o in reqs)
        kw["num_blocks"] = max(kw["num_blocks"], -(-need // kw["block_size"]))
        yield reqs, kw


@pytest.mark.parametrize("mode", ["arrays", "arrays_short_guess", "default", "scalar"])
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_fast_paths_equal_stepping_seeded(monkeypatch, name, mode):
    """The same comparison on a fixed set of 150 random workloads (deterministic, unlike Hypothesis'
    search: a cut by max_time inside a prompt's chunks is rare enough to be missed there), with
    decode runs priced as arrays (also from a guess of how many fit before the bound that falls
    short, so that more are priced), split by length as in a run, or stepped in the scalar loop."""
    monkeypatch.setattr(fastforward, "SCALAR_RUN", {"default": fastforward.SCALAR_RUN, "scalar": 10**9}.get(mode, 0))
    if mode == "arrays_short_guess":  # the arrays path reads the first duration only for its guess
        real = fastforward.fast_forward
        monkeypatch.setattr("vidur.engine.loop.run_fast_forward", lambda loop, rep, b, now, d0: real(
            loop, rep, b, now, 16 * d0))
    for reqs, kw in _seeded_cases(14, 150):
        assert outcome(run(name, reqs, fast=True, **kw)) == outcome(run(name, reqs, fast=False, **kw)), (reqs, kw)


# a decoding request, then prompts of several chunks arriving together (one prefills while the
# others wait), then arrivals spaced a few iterations apart
PLANTED = [(0.0, 3, 40), (0.001, 45, 8), (0.0, 37, 6), (0.0, 20, 9), (0.02, 30, 30), (0.004, 50, 12), (0.1, 9, 50)]


def test_the_workload_takes_both_fast_paths(monkeypatch):
    """The planted-bug workload below runs chunks in one event and short decode runs in the scalar loop."""
    seen = {"prefill": 0, "scalar": 0}
    real_prefill, real_scalar = fastforward.prefill_run, fastforward._scalar_run

    def prefill(*a):
        end, k = real_prefill(*a)
        seen["prefill"] += k > 1
        return end, k

    def scalar(*a):
        end, k = real_scalar(*a)
        seen["scalar"] += k > 1
        return end, k

    monkeypatch.setattr("vidur.engine.loop.run_prefill", prefill)
    monkeypatch.setattr(fastforward, "_scalar_run", scalar)
    run("sarathi", PLANTED, fast=True)
    assert seen["prefill"] and seen["scalar"]


@pytest.mark.parametrize("bug", ["prefill_ignores_waiting", "prefill_itl", "scalar_ignores_arrivals", "scalar_kv"])
def test_planted_bugs_are_caught(monkeypatch, bug):
    """A fast path with a planted bug no longer equals stepping on the workload above."""
    step = outcome(run("sarathi", PLANTED, fast=False))
    assert outcome(run("sarathi", PLANTED, fast=True)) == step
    real_prefill, real_scalar = fastforward.prefill_run, fastforward._scalar_run
    if bug == "prefill_ignores_waiting":  # runs the last chunk even when leftover budget would admit
        monkeypatch.setattr("vidur.engine.loop.run_prefill", lambda loop, rep, b, end, cap, last: real_prefill(
            loop, rep, b, end, cap, True))
    elif bug == "prefill_itl":  # the decodes' ITL samples of the chunk iterations lost

        def prefill(loop, *a):
            n = len(loop.itl.values)
            out = real_prefill(loop, *a)
            del loop.itl.values[n:], loop.itl.counts[n:]
            return out

        monkeypatch.setattr("vidur.engine.loop.run_prefill", prefill)
    elif bug == "scalar_ignores_arrivals":
        monkeypatch.setattr(fastforward, "_scalar_run", lambda loop, rep, b, now, d0, k, bound: real_scalar(
            loop, rep, b, now, d0, k, np.inf))
    else:  # the group's KV growth not taken

        def scalar(loop, rep, *a):
            used = rep.scheduler.kv.used
            out = real_scalar(loop, rep, *a)
            rep.scheduler.kv.used = used
            return out

        monkeypatch.setattr(fastforward, "_scalar_run", scalar)
    assert outcome(run("sarathi", PLANTED, fast=True, num_blocks=30)) != outcome(
        run("sarathi", PLANTED, fast=False, num_blocks=30))


CASES = {
    "bench_sim": ("benchmarks/bench_sim.yaml", [("workload.num_requests", 400)]),
    "chunk128_bursts": ("benchmarks/bench_sim.yaml", [("workload.num_requests", 300), ("workload.arrival.qps", 40),
                                                       ("replica_scheduler.chunk_size", 128)]),
    "preemption": ("benchmarks/bench_sim.yaml", [("workload.num_requests", 300), ("workload.arrival.qps", 30),
                                                 ("memory_planner", {"name": "paged", "num_gpu_blocks_override": 600})]),
    "max_time": ("benchmarks/bench_sim.yaml", [("workload.num_requests", 400), ("simulation.max_time", 30.0)]),
    "summary_log": ("benchmarks/bench_sim.yaml", [("workload.num_requests", 400), ("metrics.batch_log", "summary")]),
    "prefix_caching": ("scenarios/shared-prefix.yaml", [("workload.num_requests", 300)]),
    "vllm_v1": ("benchmarks/bench_sim.yaml", [("workload.num_requests", 300), ("workload.arrival.qps", 12)]),
    "multi_turn": ("scenarios/multi-turn.yaml", [("workload.num_requests", 200)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_directories_are_byte_identical(tmp_path, case):
    """Whole run directories (summary, request and batch tables or the summarised batch log's
    files) with fast paths on and off."""
    from vidur.engine.run_scenario import run_scenario
    from vidur.scenario import load_scenario

    need_shared()
    path, settings_ = CASES[case]
    sched = "vllm_v1" if case == "vllm_v1" else None
    sc = load_scenario(REPO / path, scheduler=sched, settings=settings_)
    for mode, step in (("fast", False), ("step", True)):
        run_scenario(sc, tmp_path / mode, step_mode=step)
    names = sorted(p.name for p in (tmp_path / "fast").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "step").iterdir())
    assert "summary.json" in names and "requests.parquet" in names
    for f in names:
        assert (tmp_path / "fast" / f).read_bytes() == (tmp_path / "step" / f).read_bytes(), f


def test_start_up_check_catches_a_pricer_that_disagrees():
    """The check every fast-forward run makes before it starts compares ``decode_pricer`` too."""
    from vidur.estimate.wrap import decode_pricing_mismatch

    class Off(LinearEstimator):
        def decode_pricer(self, num_decode):
            return lambda kv: self.decode_iteration_time(num_decode, kv) * (1 + 1e-12)

    assert decode_pricing_mismatch(LinearEstimator()) is None
    wrong = decode_pricing_mismatch(Off())
    assert wrong is not None and wrong.startswith("decode_pricer(")


def test_a_steady_prefill_cap_below_one_is_one_clear_error():
    from vidur.errors import PolicyOutputError

    class Bad(SarathiScheduler):
        def steady_prefill(self, batch):
            return 0, True

    h = ReplicaHarness(Bad, Bad.Config(chunk_size=16, max_batch_size=4), num_blocks=40, block_size=4, fast_forward=True)
    for gap, p, o in PLANTED:
        h.add(p, o, at=(h.requests[-1].arrival if h.requests else 0.0) + gap)
    with pytest.raises(PolicyOutputError, match="steady_prefill"):
        h.run()
