"""The sglang engine model: prefill first, the new_token_ratio admission estimate, retraction,
lpm order, SGLang's defaults, the sglang memory planner, refusals."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidur.builtin.policies.sglang import (
    CLIP_MAX_NEW_TOKENS,
    SGLangScheduler,
    default_capture_bs,
)
from vidur.errors import VidurError
from vidur.memory.sglang import SGLangMemoryConfig, SGLangMemoryPlanner, default_mem_fraction_static, gpu_defaults
from vidur.testing.harness import ReplicaHarness
from vidur.testing.strategies import traces
from vidur.workload.content import TreeBuilder

Cfg = SGLangScheduler.Config


def _harness(tokens: int, **cfg) -> ReplicaHarness:
    cfg.setdefault("prefix_caching", False)
    return ReplicaHarness(SGLangScheduler, Cfg(**cfg), num_blocks=tokens, block_size=1)


def test_prefill_batches_run_alone_within_the_chunk_and_the_chunk_continues_first():
    h = _harness(1000, chunked_prefill_size=16, max_prefill_tokens=64)
    h.add(40, 5, at=0.0)
    h.add(10, 5, at=0.0)
    batches = h.run()
    assert not h.unfinished
    # request 0 is cut to 16, continued first (16, then 8) and request 1 takes what is left of the chunk
    assert [b.tokens_of(0) for b in batches[:3]] == [16, 16, 8]
    assert batches[2].tokens_of(1) == 8 and batches[3].tokens_of(1) == 2
    assert all(b.num_tokens <= 16 for b in batches)
    cols, _ = h.loop.batches.to_columns()
    assert ((cols["num_prefill"] == 0) | (cols["num_decode"] == 0)).all()  # never mixed by default


def test_no_decode_rides_along_a_prefill_batch_unless_mixed():
    def run(mixed: bool):
        h = _harness(1000, chunked_prefill_size=16, enable_mixed_chunk=mixed)
        h.add(4, 30, at=0.0)
        h.add(48, 3, at=0.01)  # arrives while request 0 decodes: three chunks of 16
        return h, h.run()

    h, batches = run(False)
    chunks = [b for b in batches if 1 in b.requests and b.tokens_of(1) > 1]
    assert len(chunks) == 3 and all(b.requests == (1,) for b in chunks)  # decodes wait
    h, batches = run(True)
    chunks = [b for b in batches if 1 in b.requests and b.tokens_of(1) > 1]
    assert all(0 in b.requests and b.tokens_of(0) == 1 for b in chunks)  # decodes ride along
    assert [b.tokens_of(1) for b in chunks][:1] == [15]  # the chunk budget less one decode token


def test_max_prefill_tokens_stops_a_second_request_at_or_over_what_is_left():
    h = _harness(1000, chunked_prefill_size=-1, max_prefill_tokens=30)
    h.add_many([(20, 2), (10, 2), (9, 2)])
    batches = h.run()
    assert batches[0].requests == (0,)  # 10 >= 30 - 20 left, and FCFS stops at the first that does not fit
    assert batches[1].requests == (1, 2)


class _Recorder(SGLangScheduler):
    """Records, for each prefill batch, the state before schedule() and what it admitted."""

    log: list

    def schedule(self):
        self.sync_decoding()
        reserve = self.new_token_ratio * sum(min(r.final_kv - r.kv_len, CLIP_MAX_NEW_TOKENS) for r in self.decoding)
        free, waiting, chunked = self.kv.free, set(map(id, self.waiting)), self.chunked
        batch = super().schedule()
        if batch is not None and batch.prefills:
            rows = [(r is chunked, id(r) in waiting, n, r.prefill_target, r.kv_len, self._new_tokens(r))
                    for r, n in zip(batch.prefills, batch.chunks)]
            self.log.append((free, reserve, rows))
        return batch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(max_size=12, max_prompt=40, max_output=40), st.sampled_from([0.0, 0.3, 1.0, 2.0]))
def test_admission_holds_the_estimate_of_future_decode_tokens(trace, conservativeness):
    """Every request admitted in a step passes prompt + min(max_new, 4096) < free - reserve,
    where reserve is new_token_ratio x the running requests' remaining max_new_tokens plus what
    this step's earlier admissions (and the continued chunk) claimed."""
    cls = type("R", (_Recorder,), {"log": []})
    h = ReplicaHarness(cls, Cfg(chunked_prefill_size=24, max_batch_size=6, schedule_conservativeness=conservativeness,
                                prefix_caching=False), num_blocks=120, block_size=1)
    h.add_trace(trace)
    h.run()
    assert not h.unfinished
    admitted = 0
    for free, reserve, rows in cls.log:
        claimed = reserve
        for continued, was_waiting, n, target, kv_len, new in rows:
            done = kv_len + n >= target
            if was_waiting:
                assert target + new + claimed < free, (target, new, claimed, free)
                admitted += 1
            else:
                assert continued
            claimed += n + (new if done else 0)
    assert admitted >= 1


def test_reserve_holds_a_request_back_that_lower_conservativeness_admits():
    def first_scheduled(c):
        h = _harness(200, schedule_conservativeness=c)
        h.add(10, 150, at=0.0)
        late = h.add(20, 100, at=0.01)
        h.run()
        assert not h.unfinished
        return late.first_scheduled

    # 0.7 x ~145 tokens still to come of request 0 leave too little for 20 + 100
    assert first_scheduled(1.0) > 0.05
    assert first_scheduled(0.3) < 0.02


def test_retraction_frees_the_newest_shortest_output_and_it_recomputes():
    events = []

    def watch(sched, batch):
        if sched._book.preempted:
            events.append((sched.kv.used, list(sched.waiting), sched.new_token_ratio))

    h = ReplicaHarness(SGLangScheduler, Cfg(schedule_conservativeness=0.0, prefix_caching=False), num_blocks=80,
                       block_size=1, on_batch=watch)
    # the short request finishes and clears batch_is_full; with a zero ratio the running
    # request reserves nothing, so the third one is admitted and the KV runs out while decoding
    reqs = h.add_many([(4, 2), (8, 40), (12, 40), (10, 40)])
    h.run()
    assert not h.unfinished
    assert events, "the KV ran out: SGLang retracts"
    used, waiting, ratio = events[0]
    assert waiting[-1] is reqs[2]  # fewest outputs (the newer one), to the back of the queue
    assert reqs[2].preemptions >= 1 and reqs[2].recomputed > 0 and reqs[1].preemptions == 0
    assert ratio > 0.0  # retraction raises new_token_ratio from its (zero) start
    assert used <= 80
    cols, _ = h.loop.batches.to_columns()
    processed = int(cols["prefill_tokens"].sum() + cols["num_decode"].sum())
    assert processed == sum(r.prompt + r.output - 1 + r.recomputed for r in reqs)  # retracted work is redone


def test_retraction_order_is_fewest_outputs_then_longest_prompt_until_20_tokens_each():
    h = _harness(10_000)
    a, b, c = h.add_many([(8, 50), (30, 50), (20, 50)])
    sched = h.scheduler
    for r in (a, b, c):
        sched.add_request(r)
    for r in (a, b, c):
        sched.admit(r, r.prompt)
        r.kv_len = r.prompt
        sched._book.prefill_done(r)
    sched.kv.used = sched.kv.num_blocks  # nothing free
    sched._retract()
    # equal outputs: the longest prompt first (frees 30 < 20 x 2), then the next longest
    assert list(sched.waiting) == [b, c] and sched.decoding == [a]
    assert sched.kv.free == 50
    assert sched.new_token_ratio == pytest.approx((1 + 20) / 50)


def test_lpm_takes_the_longest_cached_prefix_first_and_fcfs_arrival_order():
    def order(policy):
        tree = TreeBuilder()
        root = tree.node(-1, 0)
        a = tree.node(root, 64)
        c = tree.node(root, 32)
        h = ReplicaHarness(SGLangScheduler, Cfg(max_batch_size=1, schedule_policy=policy), num_blocks=2000,
                           block_size=1, tree=(tree.parent, tree.start))
        first = h.add(100, 3, at=0.0)
        first.content = (a, -1, 0, -1)
        unique = h.add(100, 3, at=0.001)  # no content: nothing cached
        partial = h.add(100, 3, at=0.001)
        partial.content = (c, -1, 2, -1)  # shares 32 tokens with the first
        full = h.add(100, 3, at=0.001)
        full.content = (a, -1, 3, -1)  # the first request's prompt again
        h.run()
        assert not h.unfinished
        return [r.id for r in sorted((unique, partial, full), key=lambda r: r.first_scheduled)], full.cached

    lpm, hit = order("lpm")
    assert lpm == [3, 2, 1] and hit == 96
    assert order("fcfs")[0] == [1, 2, 3]


def test_new_token_ratio_decays_per_decode_step_and_resets_when_idle():
    h = _harness(10_000)
    h.add(5, 11, at=0.0)
    sched = h.scheduler
    ratios = []
    h.on_batch = lambda s, b: ratios.append(s.new_token_ratio)
    h.run()
    assert ratios[0] == pytest.approx(0.7)
    assert ratios[-1] == pytest.approx(0.7 - 10 * (0.7 - 0.7 * 0.14) / 600)
    assert sched.schedule() is None and sched.new_token_ratio == pytest.approx(0.7)


def test_defaults_follow_sglang():
    c = Cfg()
    assert (c.schedule_policy, c.max_prefill_tokens, c.schedule_conservativeness, c.page_size) == ("fcfs", 16384, 1.0, 1)
    assert c.prefix_caching is True and c.disable_radix_cache is False and c.max_running_requests is None
    assert Cfg(disable_radix_cache=True).prefix_caching is False
    assert Cfg(max_batch_size=7).max_running_requests == 7 and Cfg(max_running_requests=5).max_batch_size == 5
    sizes = default_capture_bs(256)
    assert sizes[:6] == (1, 2, 4, 8, 12, 16) and sizes[-2:] == (248, 256)
    assert default_capture_bs(600)[-4:] == (496, 512, 544, 576)
    assert gpu_defaults(81559 * 2**20, 1) == (8192, 256) and gpu_defaults(81559 * 2**20, 8) == (8192, 512)
    assert gpu_defaults(24 * 2**30, 1) == (2048, 24) and gpu_defaults(192 * 2**30, 1) == (16384, 512)
    # H100 80GB, TP1: reserved 512 + 8192 x 1.5 + 256 x 2 + 128 = 13,440 MiB
    assert default_mem_fraction_static(81559 * 2**20, 8192, 256, 1, 1) == 0.835
    # a 45 GiB GPU: 512 + 4096 x 1.5 + 32 x 2 + 128 = 6,848 MiB, no 10 GiB floor
    assert default_mem_fraction_static(46068 * 2**20, 4096, 32, 1, 1) == 0.851


def test_policy_derives_gpu_defaults_and_max_running_requests_from_the_pool():
    from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
    from vidur.hardware.catalog import default_node, get_device
    from vidur.model.catalog import load_model
    from vidur.scheduler.kv import KVBlockManager

    model = load_model("meta-llama/Llama-3.1-8B")  # context 131,072
    est = RooflineEstimator(RooflineConfig(), model, get_device("h100"), default_node("h100"), 1, 1)
    s = SGLangScheduler(Cfg(), KVBlockManager(400_000, 1), estimator=est)
    assert s.chunk_size == 8192 and s.cuda_graph_max_bs == 256 and s.cuda_graph_sizes[-1] == 256
    assert s.max_running == 2048  # 400k / 131,072 x 512 = 1,562, clamped to [2048, 4096]
    assert SGLangScheduler(Cfg(context_length=8192), KVBlockManager(400_000, 1), estimator=est).max_running == 4096
    assert SGLangScheduler(Cfg(), KVBlockManager(3000, 1), estimator=est).max_running == 1500  # tokens // 2
    assert SGLangScheduler(Cfg(disable_cuda_graph=True), KVBlockManager(3000, 1), estimator=est).cuda_graph_sizes == ()
    assert SGLangScheduler(Cfg(chunked_prefill_size=-1), KVBlockManager(3000, 1), estimator=est).chunk_size is None


def test_memory_planner_sizes_the_pool_from_mem_fraction_static():
    from vidur.hardware.catalog import get_device
    from vidur.model.catalog import load_model
    from vidur.model.cost import kv_bytes_split, max_stage_weights_bytes

    model = load_model("meta-llama/Llama-3.1-8B")
    dev = get_device("h100")
    plan = SGLangMemoryPlanner(SGLangMemoryConfig()).plan(model, dev, 1, 1)
    per_token = sum(kv_bytes_split(model, 1, 1))
    expect = (int(dev.memory_bytes * 0.835) - max_stage_weights_bytes(model, 1, 1)) // per_token
    assert plan.block_size == 1 and plan.num_blocks == expect
    assert SGLangMemoryPlanner(SGLangMemoryConfig(max_total_tokens=1000)).plan(model, dev, 1, 1).num_blocks == 1000
    more = SGLangMemoryPlanner(SGLangMemoryConfig(max_total_tokens=10**9)).plan(model, dev, 1, 1).num_blocks
    assert more == expect  # SGLang takes the smaller
    lower = SGLangMemoryPlanner(SGLangMemoryConfig(mem_fraction_static=0.7)).plan(model, dev, 1, 1).num_blocks
    assert lower < expect
    with pytest.raises(VidurError, match="no room for the KV pool"):
        SGLangMemoryPlanner(SGLangMemoryConfig(mem_fraction_static=0.1)).plan(model, dev, 1, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"schedule_policy": "dfs-weight"}, "not modelled"),
    ({"schedule_policy": "sjf"}, "not an SGLang schedule_policy"),
    ({"page_size": 16}, "page_size 16 is not modelled"),
    ({"max_running_requests": 4, "max_batch_size": 8}, "mirrors max_running_requests"),
    ({"prefix_caching": True, "disable_radix_cache": True}, "mirrors not disable_radix_cache"),
    ({"schedule_conservativeness": -1}, "schedule_conservativeness"),
    ({"cuda_graph_bs": [0, 8]}, "cuda_graph_bs"),
    ({"cuda_graph_bs": [8, 16], "cuda_graph_max_bs": 32}, "largest captured size"),
    ({"max_prefill_tokens": 0}, "max_prefill_tokens"),
])
def test_refusals_are_one_line(kwargs, match):
    with pytest.raises(VidurError, match=match) as err:
        Cfg(**kwargs)
    assert "\n" not in str(err.value)


def test_memory_planner_refusals():
    with pytest.raises(VidurError, match="mem_fraction_static"):
        SGLangMemoryConfig(mem_fraction_static=1.5)
    with pytest.raises(VidurError, match="max_total_tokens"):
        SGLangMemoryConfig(max_total_tokens=0)


def _scenario(**sched):
    from vidur.scenario import scenario_from_dict

    return scenario_from_dict({
        "model": "meta-llama/Llama-3.1-8B", "cluster": {"device": "h100"},
        "replica_scheduler": {"name": "sglang", **sched}, "memory_planner": {"name": "sglang"},
        "workload": {"num_requests": 30, "arrival": {"name": "poisson", "qps": 5.0},
                     "lengths": {"name": "uniform", "prompt_min": 64, "prompt_max": 512, "output_min": 8,
                                 "output_max": 128}},
    })


def test_simulation_runs_and_refuses_settings_the_memory_planner_disagrees_with():
    from vidur.engine.simulation import Simulation

    sim = Simulation(_scenario())
    assert sim.memory.block_size == 1 and sim.memory.num_blocks > 100_000
    res = sim.run()
    assert res is not None
    with pytest.raises(VidurError, match="chunked_prefill_size is 4096 but memory_planner chunked_prefill_size is 8192"):
        Simulation(_scenario(chunked_prefill_size=4096))


def test_decode_group_member_that_leaves_and_rejoins_at_the_same_base_finishes_once():
    """Retracted during decode and re-prefilled while no decode step ran (SGLang runs prefill
    batches alone), a request rejoins the lazy decode group at its old base: its stale heap
    entry equals the live one and must not finish it twice."""
    from vidur.entities.request import Request
    from vidur.engine.log import ITLLog
    from vidur.scheduler.decode_group import DecodeGroup
    from vidur.scheduler.kv import KVBlockManager

    g = DecodeGroup(KVBlockManager(1000, 1))
    r = Request(0, 0.0, 10, 5)
    r.kv_len = r.blocks = 10
    r.last_token = 0.0
    assert g.join(r)
    g.leave(r)
    assert g.join(r)  # same step, same kv_len: same base
    done = g.advance(4, 0.0, 0.1, 0.4, ITLLog())
    assert done == [r]


def test_validate_warmup_takes_a_policy_without_an_explicit_cap():
    from vidur.validate.run import _warmup_shapes

    sc = _scenario()
    assert sc.replica_scheduler.config.max_batch_size is None
    table = type("T", (), {"prompt": __import__("numpy").array([10, 20, 30]), "__len__": lambda self: 3})()
    pre, dec = _warmup_shapes(sc, table)
    assert pre == list(range(1, 31)) and dec == [1, 3]


def test_lpm_defers_a_second_waiting_request_with_the_same_uncached_prefix():
    """SGLang's in-batch prefix caching: A2 shares its first 48 tokens with A1 and nothing is
    cached yet, so lpm puts it last and B fills the prefill budget beside A1; fcfs stops at A2."""
    def first_batch(policy):
        tree = TreeBuilder()
        root = tree.node(-1, 0)
        a1, a2 = tree.node(root, 48), tree.node(root, 48)
        h = ReplicaHarness(SGLangScheduler, Cfg(schedule_policy=policy, chunked_prefill_size=-1, max_prefill_tokens=100),
                           num_blocks=2000, block_size=1, tree=(tree.parent, tree.start))
        for i, (leaf, prompt) in enumerate([(a1, 64), (a2, 64), (None, 30)]):
            r = h.add(prompt, 2, at=0.0)
            if leaf is not None:
                r.content = (leaf, -1, i, -1)
        batches = h.run()
        assert not h.unfinished
        return batches[0].requests, h.requests[1].cached

    assert first_batch("lpm") == ((0, 2), 48)  # and A2 then finds A1's 48 tokens cached
    assert first_batch("fcfs")[0] == (0,)


def test_a_refusal_marks_the_batch_full_until_a_running_request_finishes():
    """After a request fails the memory estimate, SGLang tries no prefill until the running
    batch shrinks, although the decaying ratio would let this one in after ~70 decode steps."""
    h = _harness(3000)
    first = h.add(10, 2000, at=0.0)
    late = h.add(100, 1600, at=0.0005)  # 1,700 >= 2,989 free - 0.7 x 1,999 reserved: refused
    h.run()
    assert not h.unfinished
    assert late.first_scheduled >= first.completion
