"""Automatic prefix caching: the block manager, its use by the engine, and its workloads."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.entities.request import Request
from vidur.scheduler.prefix_cache import PrefixCachingKVManager
from vidur.testing.conformance import shared_content
from vidur.testing.harness import ReplicaHarness
from vidur.testing.strategies import traces
from vidur.workload.content import TreeBuilder

from .conftest import REPO


def _req(i, prompt, output, leaf=None, out=-1):
    r = Request(i, 0.0, prompt, output)
    if leaf is not None:
        r.content = (leaf, out, i, -1)
    return r


def _tree_kv(num_blocks=64, block_size=16):
    tree = TreeBuilder()
    kv = PrefixCachingKVManager(num_blocks, block_size, tree.parent, tree.start)
    return tree, kv


# -- the block manager by hand ---------------------------------------------------


def test_second_request_hits_full_blocks_only():
    tree, kv = _tree_kv()
    sys = tree.node(-1, 0)
    a = _req(0, 50, 4, tree.node(sys, 40))
    b = _req(1, 60, 4, tree.node(sys, 40))
    kv.admit(a, kv.blocks_for(50))
    assert a.kv_len == 0 and a.cached == 0
    a.kv_len = 50
    kv.computed(a)  # blocks 0..2 are full (48 tokens); block 3 partial
    assert len(kv.table) == 3
    kv.admit(b, kv.blocks_for(60))
    # shared system prompt: 40 tokens -> 2 full blocks (32 tokens); block 2 mixes a's question
    assert b.kv_len == 32 and b.cached == 32
    assert kv.used == 4 + 4 - 2  # a's 4 blocks, b's 4, two shared
    kv.free_request(a)
    assert kv.used == 4 and kv.cached_blocks == 1  # a's own full block 2 stays cached
    kv.free_request(b)
    assert kv.used == 0 and kv.audit([]) is None


def test_whole_prompt_hit_leaves_one_token_to_compute():
    tree, kv = _tree_kv()
    leaf = tree.node(-1, 0)
    a, b = _req(0, 64, 2, leaf), _req(1, 64, 2, leaf)
    kv.admit(a, 4)
    a.kv_len = 64
    kv.free_request(a)
    kv.admit(b, 4)
    assert b.kv_len == 48  # 3 of 4 blocks: the last block holds the token that must be computed


def test_lru_evicts_least_recently_freed_tail_first():
    tree, kv = _tree_kv(num_blocks=4, block_size=16)
    a = _req(0, 33, 1, tree.node(-1, 0))
    kv.admit(a, 3)
    a.kv_len = 33
    kv.free_request(a)  # blocks 0, 1 cached (block 2 partial)
    assert kv.cached_blocks == 2 and kv.used == 0
    c = _req(1, 40, 1, tree.node(-1, 0))
    kv.admit(c, 3)  # 3 new blocks, 1 never-cached free: evicts one cached block, a's tail
    assert kv.evicted_blocks == 1
    kv.free_request(c)
    b = _req(2, 33, 1, a.content[0])
    kv.admit(b, 3)
    assert b.kv_len == 16  # a's first block survived, its second was evicted


def test_preempted_request_hits_its_own_blocks():
    h = ReplicaHarness(VLLMScheduler, VLLMScheduler.Config(watermark_fraction=0.0, prefix_caching=True),
                       num_blocks=10, block_size=16)
    h.add(64, 60, at=0.0)
    h.add(64, 60, at=0.0)
    h.run()
    assert sum(r.preemptions for r in h.requests) >= 1
    assert h.kv.recompute_hit_tokens > 0
    assert h.kv.used == 0 and h.kv.audit([]) is None


def test_token_granular_policy_shares_units_of_16_tokens():
    kv = PrefixCachingKVManager(1000, 1)
    assert kv.unit == 16 and kv.unit_blocks == 16


# -- properties ---------------------------------------------------------------------

PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(trace, caching, *, content=False, num_blocks=32, fast_forward=False, cls=SarathiScheduler, **cfg):
    config = cls.Config(prefix_caching=caching, **({"chunk_size": 16} if cls is SarathiScheduler else {}), **cfg)
    tree = TreeBuilder()
    h = ReplicaHarness(cls, config, num_blocks=num_blocks, block_size=4, fast_forward=fast_forward,
                       tree=(tree.parent, tree.start))
    h.add_trace(trace)
    if content:
        shared_content(tree, h.requests)
    h.run()
    return h


def _timeline(h):
    return [(r.first_scheduled, r.first_token, r.completion, r.preemptions) for r in h.requests]


@PROPS
@given(traces(max_size=12, max_prompt=40, max_output=20))
def test_caching_off_and_unique_prompts_without_preemption_match(trace):
    """With nothing to share, caching changes nothing (unless a preemption re-hits)."""
    off = _run(trace, False, num_blocks=400)
    on = _run(trace, True, num_blocks=400)
    assert _timeline(on) == _timeline(off)
    assert on.kv.hit_tokens == 0


@PROPS
@given(traces(max_size=14, max_prompt=40, max_output=20), st.booleans())
def test_cache_invariants_and_conservation(trace, ff):
    """No block is freed while referenced; cached tokens never exceed the prompt;
    every request finishes; the cache is consistent at the end."""
    h = _run(trace, True, content=True, num_blocks=24, fast_forward=ff)
    assert all(np.isfinite(r.completion) for r in h.requests)
    assert all(0 <= r.cached <= r.prompt - 1 for r in h.requests)
    assert h.kv.used == 0
    assert h.kv.audit([]) is None
    assert h.kv.hit_tokens <= h.kv.query_tokens == sum(r.prompt for r in h.requests)


@PROPS
@given(traces(max_size=12, max_prompt=40, max_output=12))
def test_fast_forward_equals_stepping_with_caching(trace):
    a = _run(trace, True, content=True, num_blocks=24, fast_forward=True)
    b = _run(trace, True, content=True, num_blocks=24, fast_forward=False)
    assert _timeline(a) == _timeline(b)


def test_hit_rate_zero_for_distinct_prompts_and_near_one_for_a_repeated_prompt():
    tree = TreeBuilder()
    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(prefix_caching=True), num_blocks=4096,
                       tree=(tree.parent, tree.start))
    for i in range(50):
        h.add(500, 20, at=i * 1.0)
    h.run()
    assert h.kv.hit_tokens == 0  # no content: every prompt distinct
    tree = TreeBuilder()
    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(prefix_caching=True), num_blocks=4096,
                       tree=(tree.parent, tree.start))
    leaf = tree.node(-1, 0)
    for i in range(50):
        h.add(500, 20, at=i * 1.0).content = (leaf, -1, i, -1)
    h.run()
    assert h.kv.hit_tokens / h.kv.query_tokens > 0.95


# -- whole runs -----------------------------------------------------------------------------


def _scenario(tmp_path, lengths, extra=""):
    p = tmp_path / "s.yaml"
    p.write_text(
        "model: vidur/tiny-llama\ncluster: {device: h100, num_replicas: 2}\n"
        "replica_scheduler: {name: sarathi, chunk_size: 256, prefix_caching: true}\n"
        "runtime_estimator: roofline\n"
        f"workload: {{num_requests: 120, arrival: {{name: poisson, qps: 20}}, lengths: {lengths}}}\n"
        f"simulation: {{progress: false}}\n{extra}"
    )
    return p


@pytest.mark.parametrize("lengths", [
    "{name: shared_prefix, num_groups: 3, prompts_per_group: 5, system_prompt_len: 300, question_len: 40, output_len: 20}",
    "{name: multi_turn, think_time_s: 0.5, output_median: 40, input_median: 30, max_tokens: 2048}",
    "{name: agentic, think_time_s: 0.1, system_prompt_len: 500, max_tokens: 2048}",
])
def test_prefix_workloads_run_deterministically_and_fast_forward_equals_stepping(tmp_path, lengths):
    from vidur.cli import main

    p = _scenario(tmp_path, lengths)
    for name, extra in (("a", []), ("b", []), ("c", ["--step"])):
        assert main(["run", str(p), "--out", str(tmp_path / name), "--no-progress", *extra]) == 0
    for f in ("summary.json", "requests.parquet", "batches.parquet"):
        assert filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False)
        assert filecmp.cmp(tmp_path / "a" / f, tmp_path / "c" / f, shallow=False), f
    import json

    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["prefix_cache"]["cluster"]["hit_rate"] > 0.3
    from vidur.metrics.tablefile import read_run_table

    assert "cached_tokens" in read_run_table(tmp_path / "a", "requests")


def test_multi_turn_is_closed_loop(tmp_path):
    """Turn k+1 arrives after turn k completed (plus think time) and resends its history."""
    import csv

    from vidur.cli import main

    p = _scenario(tmp_path, "{name: multi_turn, think_time_s: 0.5, output_median: 40, input_median: 30, max_tokens: 2048}")
    assert main(["run", str(p), "--out", str(tmp_path / "a"), "--no-progress", "-s", "metrics.table_format", "csv"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "a" / "requests.csv")))
    assert [int(r["request_id"]) for r in rows] == list(range(len(rows)))
    assert [float(r["arrival"]) for r in rows] == sorted(float(r["arrival"]) for r in rows)
    by_session: dict[str, list] = {}
    for r in rows:
        by_session.setdefault(r["session"], []).append(r)
    multi = [s for s in by_session.values() if len(s) > 1]
    assert multi
    for turns in multi:
        for prev, nxt in zip(turns, turns[1:]):
            assert float(nxt["arrival"]) >= float(prev["completion"])
            assert int(nxt["prompt_tokens"]) > int(prev["prompt_tokens"]) + int(prev["output_tokens"]) - 1


def test_caching_switch_off_keeps_outputs(tmp_path):
    """prefix_caching: false writes what a policy without caching writes (no new columns or sections)."""
    from vidur.cli import main

    sc = REPO / "scenarios" / "quickstart.yaml"
    assert main(["run", str(sc), "--out", str(tmp_path / "a"), "--no-progress", "-s", "workload.num_requests", "60"]) == 0
    assert main(["run", str(sc), "--out", str(tmp_path / "b"), "--no-progress", "-s", "workload.num_requests", "60",
                 "-s", "replica_scheduler.prefix_caching", "false"]) == 0
    for f in ("summary.json", "requests.parquet", "batches.parquet"):
        assert filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False)
    assert "prefix_cache" not in (tmp_path / "a" / "summary.json").read_text()


# -- trace replay with block hashes -------------------------------------------------------

MOONCAKE = REPO / "tests" / "data" / "mooncake_small.jsonl"


def _trace_table(path, n, **cfg):
    from vidur.workload.arrivals import TraceArrivals
    from vidur.workload.lengths import TraceLengths
    from vidur.workload.workload import build_requests

    return build_requests(TraceArrivals(TraceArrivals.Config(path=str(path))),
                          TraceLengths(TraceLengths.Config(path=str(path), **cfg)), np.random.default_rng(0), n)


def test_mooncake_jsonl_gives_arrivals_lengths_and_shared_blocks():
    t = _trace_table(MOONCAKE, 6)
    assert t.arrival.tolist() == [0.0, 0.105, 0.23, 0.23, 1.5, 1.8]
    assert t.prompt.tolist() == [1200, 1800, 1300, 600, 2000, 700]
    tree = t.content.tree
    leaf = t.content.leaf
    # rows 0 and 2 end in the same block (hash 2 under 0, 1); rows 1 and 4 share 0, 3, 4, 5
    assert leaf[0] == leaf[2] and leaf[1] == leaf[4]
    assert tree.start[leaf[0]] == 1024 and tree.start[leaf[3]] == 512
    # row 5 (700 tokens, one hash) shares block 6 with row 3; its tokens past 512 are its own
    assert tree.parent[leaf[3]] == tree.parent[leaf[5]] and tree.start[leaf[5]] == 512 and leaf[5] != leaf[3]


def test_csv_hash_ids_column_and_block_size(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens,hash_ids\n0,40,2,1 2 3\n1,50,2,\"[1, 2, 4, 5]\"\n2,10,2,\n")
    t = _trace_table(p, 3, hash_block_size=16)
    leaf, start, parent = t.content.leaf, t.content.tree.start, t.content.tree.parent
    assert start[leaf[0]] == 32 and start[leaf[1]] == 48
    assert parent[parent[leaf[1]]] == parent[leaf[0]]  # both under blocks 1, 2
    assert start[leaf[2]] == 0  # no hashes: the prompt is its own


def test_bad_hash_ids_is_one_line_error(tmp_path):
    from vidur.errors import VidurError

    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens,hash_ids\n0,40,2,1 x 3\n")
    with pytest.raises(VidurError, match="line 2: hash_ids '1 x 3' is not a list of integer block ids"):
        _trace_table(p, 1)
    q = tmp_path / "t.jsonl"
    q.write_text('{"timestamp": 0, "input_length": 5}\n')
    with pytest.raises(VidurError, match="line 1: missing output_length"):
        _trace_table(q, 1)


# -- routing ------------------------------------------------------------------------------------


def test_prefix_aware_router_follows_the_cached_prefix():
    from vidur.builtin.policies.routing import PrefixAware
    from vidur.testing.harness import ClusterHarness

    tree = TreeBuilder()
    h = ClusterHarness(PrefixAware, num_replicas=3, scheduler_config=SarathiScheduler.Config(prefix_caching=True),
                       tree=(tree.parent, tree.start))
    docs = [tree.node(-1, 0) for _ in range(3)]
    for i in range(12):  # three long documents, asked about in turn, far apart in time
        doc = docs[i % 3]
        h.add(2000, 4, at=i * 5.0).content = (tree.node(doc, 1900), -1, i, -1)
    routes = h.run()
    # once each document is cached somewhere, its questions go there
    assert routes[3:] == routes[:3] * 3
    assert all(r.cached >= 1888 for r in h.requests[3:])


def test_session_affinity_keeps_a_session_on_one_replica():
    from vidur.builtin.policies.routing import SessionAffinity
    from vidur.testing.harness import ClusterHarness

    h = ClusterHarness(SessionAffinity, num_replicas=3)
    for i in range(12):
        h.add(100, 4, at=i * 0.001).content = (0, -1, i, i % 4)
    routes = h.run()
    for s in range(4):
        assert len({routes[i] for i in range(12) if i % 4 == s}) == 1
    assert len(set(routes)) == 3  # first turns spread by load


def test_router_weights_are_checked():
    from vidur.builtin.policies.routing import PrefixAware
    from vidur.errors import VidurError

    with pytest.raises(VidurError, match="load_weight must be a number >= 0"):
        PrefixAware.Config(load_weight=-1)


# -- metrics in search results and compare ----------------------------------------------------------


def test_compare_reads_block_hashes_from_the_trace_and_reports_the_simulated_hit_rate(tmp_path, capsys):
    import json

    from vidur.cli import main

    data = REPO / "tests" / "data"
    rows = (data / "vllm_bench_small_trace.csv").read_text().splitlines()
    # every request shares its first 512-token block (hash 7); the rest is its own
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join([rows[0] + ",hash_ids"] + [r + ",7 " + str(100 + i) for i, r in enumerate(rows[1:])]) + "\n")
    sc = tmp_path / "deploy.yaml"
    sc.write_text("model: meta-llama/Meta-Llama-3-8B\ncluster: {device: h100}\n"
                  "replica_scheduler: {name: vllm, prefix_caching: true}\nruntime_estimator: roofline\n"
                  "workload: {num_requests: 1, arrival: {name: poisson, qps: 1.0}, lengths: {name: fixed}}\n")
    rc = main(["compare", "--real", str(data / "vllm_bench_small.json"), "--trace", str(trace), "--scenario", str(sc),
               "--json", "--no-plots"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["prefix_cache"]["real"] is None and rep["prefix_cache"]["sim"]["hit_tokens"] > 0
    assert any("hash_ids" in n for n in rep["notes"])


def test_search_results_carry_hit_rate_for_caching_configurations(tmp_path):
    import csv

    from vidur.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(
        "model: vidur/tiny-llama\nworkload:\n"
        "  lengths: {name: shared_prefix, num_groups: 2, prompts_per_group: 3, system_prompt_len: 512, question_len: 32, output_len: 8}\n"
        "  arrival: poisson\n  duration: 1\nslos:\n  ttft: {quantile: 0.99, max_s: 0.2}\n"
        "grid:\n  devices: [h100]\n  tensor_parallel: [1]\n  replicas: [1]\n"
        "  replica_schedulers: [{name: sarathi, prefix_caching: true}, {name: sarathi, prefix_caching: false}]\n"
        "  global_schedulers: [round_robin]\nsearch: {tolerance: 0.3, coarse_fraction: 0, max_probes: 6}\n"
    )
    assert main(["search", str(spec), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o" / "results.csv")))
    on = next(r for r in rows if "prefix_caching=True" in r["config"])
    off = next(r for r in rows if "prefix_caching=False" in r["config"])
    assert float(on["prefix_hit_rate"]) > 0.5 and off["prefix_hit_rate"] == ""


@settings(max_examples=300, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 400), max_size=6, unique=True),
    nodes=st.lists(st.integers(-50, 50), min_size=7, max_size=7),
    unit=st.sampled_from([1, 2, 3, 16, 32]),
    first=st.integers(0, 30),
    count=st.integers(0, 60),
)
def test_content_keys_are_the_per_unit_definition(cuts, nodes, unit, first, count):
    """``_keys`` builds each path segment's keys as one range; they are the per-unit definition:
    unit u ends at token (u + 1) x unit, and its key is node x KEY_SPAN + (end - start) of the
    last segment starting before that end."""
    from vidur.workload.content import KEY_SPAN

    starts = [0, *sorted(cuts)]
    nodes = nodes[: len(starts)]
    want = []
    for u in range(first, first + count):
        end = (u + 1) * unit
        i = max(j for j, s in enumerate(starts) if s < end)
        want.append(nodes[i] * KEY_SPAN + (end - starts[i]))
    assert PrefixCachingKVManager._keys(starts, nodes, unit, first, first + count) == want
