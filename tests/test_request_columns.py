"""A run keeps no Request object after completion; its columns hold what the objects held (issue 14 item 1)."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vidur.engine.requests as requests_mod
from vidur.engine.loop import EventLoop
from vidur.engine.request_view import RequestRecord, RequestsView
from vidur.engine.requests import TableRequests
from vidur.engine.simulation import Simulation
from vidur.entities.request import Request
from vidur.testing.helpers import tiny_scenario
from vidur.testing.strategies import traces

FIELDS = ("id", "replica", "arrival", "prompt", "output", "first_scheduled", "first_token", "completion",
          "preemptions", "recomputed", "cached")


def live_requests() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Request)


def build(host, scheduler, trace=None, *, blocks=None, replicas=2, settings_=None, **kw):
    s = dict(settings_ or {})
    if blocks is not None:
        s["memory_planner.num_gpu_blocks_override"] = blocks
    sc = tiny_scenario(scheduler, host=host, num_replicas=replicas, settings=s, **kw)
    return Simulation(sc, host, requests=trace.to_table() if trace is not None else None)


def with_objects(sim: Simulation, *, fast_forward: bool) -> list[Request]:
    """The run as before columns: every Request made up front, read back after the loop."""
    reqs = TableRequests(sim.table).make_rows(slice(0, len(sim.table)))
    sc = sim.scenario
    EventLoop(reqs, sim.replica_states, sim.router, fast_forward=fast_forward, max_time=sc.simulation.max_time).run()
    return reqs


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


SCHEDULERS = {
    "sarathi": {"name": "sarathi", "chunk_size": 16, "max_batch_size": 4},
    "vllm": {"name": "vllm", "max_batch_size": 4, "max_tokens_in_batch": 64, "watermark_fraction": 0.0},
    "orca": {"name": "orca", "max_batch_size": 4},
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(trace=traces(min_size=1, max_size=30, max_prompt=60, max_output=40), blocks=st.integers(7, 16),
       fast=st.booleans(), cut=st.sampled_from([None, 0.02, 0.2]))
def test_columns_hold_what_the_objects_held(vidur_host, monkeypatch, name, trace, blocks, fast, cut):
    """Each request completes exactly once and its columns are the fields a Request object ends with,
    under preemptions (few KV blocks), fast-forward or stepping, and runs cut by max_time (blocks of
    arrivals and flushes of completions small enough to cross several times)."""
    monkeypatch.setattr(requests_mod, "BLOCK", 4)
    monkeypatch.setattr(requests_mod, "FLUSH", 3)
    s = {"simulation.max_time": cut, "simulation.fast_forward": fast}
    sim = build(vidur_host, SCHEDULERS[name], trace, blocks=blocks, settings_=s)
    try:
        result = sim.run(progress=False)
    except Exception as exc:  # a request that cannot fit the few blocks is refused before the run
        assert "KV cache" in str(exc)
        return
    objs = with_objects(build(vidur_host, SCHEDULERS[name], trace, blocks=blocks, settings_=s), fast_forward=fast)
    view = result.requests
    assert len(view) == len(objs) == len(trace)
    for rec, obj in zip(view, objs):
        for f in FIELDS:
            assert getattr(rec, f) == getattr(obj, f), (f, rec, obj)
    cols = result.records.requests
    done = np.isfinite(cols["completion"])
    assert int(done.sum()) == sum(o.completion != math.inf for o in objs)
    if cut is None:
        assert done.all()
        assert (cols["replica"] >= 0).all()


@pytest.mark.parametrize(
    "scheduler,extra",
    [
        ("sarathi", {}),
        ("vllm", {"memory_planner.num_gpu_blocks_override": 30}),  # preempts
        ("orca", {"cluster.pipeline_parallel": 2}),
        ({"name": "sarathi", "prefix_caching": True}, {}),
    ],
)
def test_no_request_object_survives_a_finished_run(vidur_host, monkeypatch, scheduler, extra):
    monkeypatch.setattr(requests_mod, "BLOCK", 64)
    monkeypatch.setattr(requests_mod, "FLUSH", 1)  # completions written at once: none kept for a batched write
    sim = build(vidur_host, scheduler, num_requests=300, prompt_tokens=48, output_tokens=12, qps=400.0,
                settings_=extra)
    before = live_requests()
    loop = EventLoop(sim.request_source(), sim.replica_states, sim.router, record_spans=True)
    end = loop.run()
    # the loop, its request source, schedulers, books, decode groups, KV managers and router are all alive
    assert live_requests() == before
    cols = sim._records(loop, end, 0.0).requests
    assert np.isfinite(cols["completion"]).all()
    if "num_gpu_blocks_override" in str(extra):
        assert cols["preemptions"].sum() > 0


@pytest.mark.parametrize("router", ["lor", "prefix_aware", "random", "round_robin", "session_affinity"])
@pytest.mark.parametrize("scheduler", ["faster_transformer", "lightllm", "orca", "sarathi", "sglang", "vllm",
                                       "vllm_v1"])
def test_no_built_in_policy_keeps_finished_requests(vidur_host, monkeypatch, scheduler, router):
    monkeypatch.setattr(requests_mod, "FLUSH", 1)
    sim = build(vidur_host, scheduler, global_scheduler=router, num_requests=60, prompt_tokens=40, output_tokens=6,
                qps=300.0, replicas=3)
    before = live_requests()
    loop = EventLoop(sim.request_source(), sim.replica_states, sim.router)
    loop.run()
    assert loop.completed == 60
    assert live_requests() == before


def test_closed_loop_keeps_no_request_and_numbers_by_arrival(vidur_host, monkeypatch):
    monkeypatch.setattr(requests_mod, "BLOCK", 16)
    monkeypatch.setattr(requests_mod, "FLUSH", 1)
    sc = tiny_scenario(
        {"name": "sarathi", "prefix_caching": True}, host=vidur_host, global_scheduler="session_affinity",
        num_requests=120,
        settings={"workload.lengths": {"name": "multi_turn", "system_prompt_len": 64, "min_turns": 2, "max_turns": 5,
                                       "think_time_s": 0.05, "max_tokens": 2048},
                  "workload.arrival.qps": 20.0},
    )
    sim = Simulation(sc, vidur_host)
    assert sim.table.content.closed_loop
    before = live_requests()
    loop = EventLoop(sim.request_source(), sim.replica_states, sim.router)
    end = loop.run()
    assert live_requests() == before
    cols = sim._records(loop, end, 0.0).requests
    assert np.isfinite(cols["completion"]).all()
    assert (np.diff(cols["arrival"]) >= 0).all()  # ids handed out in arrival order
    assert sorted(cols["session"].tolist()) == sorted(sim.table.content.session.tolist())


def test_max_time_cut_writes_live_requests_from_their_objects(vidur_host):
    sim = build(vidur_host, "sarathi", num_requests=400, qps=2000.0, settings_={"simulation.max_time": 0.05})
    cols = sim.run(progress=False).records.requests
    arrived = cols["replica"] >= 0
    unfinished = arrived & np.isnan(cols["completion"])
    assert arrived.any() and unfinished.any() and not arrived.all()
    assert np.isfinite(cols["first_scheduled"][arrived & np.isfinite(cols["completion"])]).all()
    assert np.isnan(cols["first_scheduled"][~arrived]).all()
    assert (cols["preemptions"][~arrived] == 0).all()


def test_view_reads_the_columns():
    nan = math.nan
    cols = {
        "request_id": np.array([0, 1, 2]),
        "replica": np.array([1, 0, -1]),
        "arrival": np.array([0.0, 0.5, 1.0]),
        "prompt_tokens": np.array([3, 4, 5]),
        "output_tokens": np.array([1, 2, 3]),
        "first_scheduled": np.array([0.1, 0.6, nan]),
        "first_token": np.array([0.2, nan, nan]),
        "completion": np.array([0.2, nan, nan]),
        "preemptions": np.array([0, 2, 0]),
        "recomputed_tokens": np.array([0, 7, 0]),
    }
    v = RequestsView(cols)
    assert len(v) == 3
    assert v[0] == RequestRecord(0, 1, 0.0, 3, 1, 0.1, 0.2, 0.2, 0, 0, 0, -1)
    assert v[-2].first_token == math.inf and v[1].preemptions == 2 and v[1].recomputed == 7
    assert v[0].finished and not v[1].finished
    assert [r.id for r in v] == [0, 1, 2] and v[1:] == [v[1], v[2]]
    assert all(type(x) is int for x in v[0][:2]) and type(v[0].arrival) is float
    with pytest.raises(IndexError):
        v[3]
    with pytest.raises(AttributeError):
        v[0].completion = 1.0
