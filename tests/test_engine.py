"""Event-loop behaviour: pipeline stages, routing, same-time events, max_time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.builtin.policies.routing import LeastOutstanding, RandomRouting, RoundRobin
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.engine.loop import EventLoop, ReplicaState
from vidur.entities.request import Request
from vidur.scheduler.kv import KVBlockManager
from vidur.testing.fakes import LinearEstimator
from vidur.testing.harness import ReplicaHarness


@settings(max_examples=40, deadline=None)
@given(
    reqs=st.lists(st.tuples(st.integers(1, 60), st.integers(1, 20)), min_size=1, max_size=20),
    stages=st.integers(2, 4),
)
def test_pipeline_stages_never_overlap_and_all_finish(reqs, stages):
    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=16, max_batch_size=6),
                       num_blocks=512, block_size=4, num_stages=stages)
    h.add_many(reqs)
    h.run()
    assert not h.unfinished
    _, spans = h.loop.batches.to_columns()
    for s in range(stages):
        mine = spans["stage"] == s
        start, end = spans["start"][mine], spans["end"][mine]
        order = np.argsort(start, kind="stable")
        assert (start[order][1:] >= end[order][:-1] - 1e-12).all(), "a stage ran two micro-batches at once"
    # a batch goes through the stages in order
    for b in np.unique(spans["batch"]):
        rows = spans["batch"] == b
        st_ = spans["stage"][rows]
        assert list(st_) == list(range(stages))
        assert (np.diff(spans["start"][rows]) > 0).all()


def test_pipeline_keeps_several_micro_batches_in_flight():
    """As many micro-batches in flight as stages, and a request never in two in-flight batches at once.

    No host overhead (it falls on the first stage alone): the four stages take equal times.
    """
    from vidur.testing.fakes import LinearConfig

    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=8, max_batch_size=8),
                       num_blocks=512, block_size=4, num_stages=4, estimator=LinearEstimator(LinearConfig(base=0.0)))
    h.add_many([(8, 30)] * 8)
    views = h.run()
    cols, spans = h.loop.batches.to_columns()
    starts, ends = cols["start"], cols["end"]
    assert len(views) == len(starts)
    in_flight = [np.flatnonzero((starts <= t) & (ends > t)) for t in starts]
    assert max(len(x) for x in in_flight) == 4  # one per stage, never more
    for x in in_flight:
        members = [r for i in x for r in views[i].requests]
        assert len(members) == len(set(members)), [views[i].requests for i in x]


class _TransferEstimator(LinearEstimator):
    """The linear fake with a send/recv between pipeline stages."""

    def __init__(self, xfer: float):
        super().__init__()
        self.xfer = xfer

    def pp_transfer_time(self, num_tokens: int) -> float:
        return self.xfer


@pytest.mark.parametrize("stages", [2, 4])
def test_pipeline_stages_pay_send_recv(stages):
    """A batch crossing ``stages`` stages pays ``stages - 1`` transfers, exactly."""
    ends = {}
    for xfer in (0.0, 0.004):
        h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=64), num_blocks=64, block_size=16,
                           num_stages=stages, estimator=_TransferEstimator(xfer))
        h.add(prompt=40, output=1)
        h.run()
        cols, _ = h.loop.batches.to_columns()
        ends[xfer] = float(cols["end"][0] - cols["start"][0])
    assert ends[0.004] - ends[0.0] == pytest.approx((stages - 1) * 0.004, rel=1e-9)


def _loop(router_cls, replicas=3, n=12):
    scheds = [VLLMScheduler(VLLMScheduler.Config(), KVBlockManager(4096, 16), i) for i in range(replicas)]
    states = [ReplicaState(i, s, LinearEstimator(), 4, 1) for i, s in enumerate(scheds)]
    router = router_cls(router_cls.Config(), scheds, np.random.default_rng(0))
    reqs = [Request(i, 0.001 * i, 16, 4 + (i % 3) * 20) for i in range(n)]
    EventLoop(reqs, states, router).run()
    return reqs


def test_round_robin_cycles():
    assert [r.replica for r in _loop(RoundRobin)] == [i % 3 for i in range(12)]


def test_random_routing_is_seeded():
    a = [r.replica for r in _loop(RandomRouting)]
    b = [r.replica for r in _loop(RandomRouting)]
    assert a == b and len(set(a)) > 1


def test_lor_counts_queued_and_running():
    scheds = [VLLMScheduler(VLLMScheduler.Config(), KVBlockManager(4096, 16), i) for i in range(2)]
    router = LeastOutstanding(LeastOutstanding.Config(), scheds, np.random.default_rng(0))
    scheds[0].running.append(Request(0, 0.0, 4, 4))  # one running on replica 0
    assert router.route(Request(1, 0.0, 4, 4)) == 1
    scheds[1].waiting.append(Request(2, 0.0, 4, 4))
    scheds[1].waiting.append(Request(3, 0.0, 4, 4))  # two queued on replica 1
    assert router.route(Request(4, 0.0, 4, 4)) == 0


def test_lor_always_picks_a_least_loaded_replica():
    class Checked(LeastOutstanding):
        def route(self, req):
            loads = [len(r.waiting) + len(r.running) for r in self.replicas]
            choice = super().route(req)
            assert loads[choice] == min(loads)
            return choice

    reqs = _loop(Checked, replicas=3, n=30)
    assert len({r.replica for r in reqs}) == 3


def test_same_time_arrivals_batch_together():
    h = ReplicaHarness(VLLMScheduler, num_blocks=256, block_size=4)
    h.add_many([(8, 2)] * 3, at=0.5)
    batches = h.run()
    assert batches[0].requests == (0, 1, 2) and batches[0].time == 0.5


def test_max_time_stops_early_and_leaves_requests_unfinished():
    h = ReplicaHarness(SarathiScheduler, num_blocks=256, block_size=4)
    h.add_many([(8, 500)] * 2)
    h.run(max_time=0.05)
    assert h.unfinished
    assert all(r.completion == float("inf") for r in h.unfinished)
    assert h.loop.now <= 0.05 + 1e-9


@pytest.mark.parametrize("fast", [True, False])
def test_iteration_times_match_estimator(fast):
    est = LinearEstimator()
    h = ReplicaHarness(SarathiScheduler, num_blocks=256, block_size=4, estimator=est, fast_forward=fast)
    h.add(10, 5)
    h.run()
    cols, _ = h.loop.batches.to_columns()
    c = est.config
    expect = c.base + c.per_token * (cols["prefill_tokens"] + cols["num_decode"]) + c.per_kv * cols["decode_kv"] \
        + c.per_pair * cols["prefill_work"]
    assert np.allclose(cols["end"] - cols["start"], expect, rtol=1e-12)
