"""The plugin developer kit: pytest fixtures, harnesses and Hypothesis strategies."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidur import plugins
from vidur.builtin.policies.routing import LeastOutstanding, RoundRobin
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.entities.request import Request
from vidur.hookspecs import hookimpl
from vidur.scheduler.global_base import GlobalScheduler
from vidur.testing.strategies import Trace, lengths, requests, traces, workloads

pytest_plugins = ["pytester"]


# -- the plugin itself ------------------------------------------------------------


def test_pytest11_entry_point_points_at_the_plugin():
    eps = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert eps.get("vidur") == "vidur.testing.pytest_plugin"


def test_plugin_import_is_cheap():
    """pytest imports it in every run of this environment: no heavy imports, no numpy."""
    code = (
        "import sys, vidur.testing.pytest_plugin as p\n"
        "heavy = [m for m in ('numpy', 'torch', 'sklearn', 'matplotlib', 'hypothesis', 'pandas', 'vidur.plugins')"
        " if m in sys.modules]\n"
        "hooks = [n for n in dir(p) if n.startswith('pytest_')]\n"
        "print(heavy, hooks)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


# -- vidur_host / vidur_register ------------------------------------------------------


class _Mine(GlobalScheduler):
    name = "mine"

    def route(self, req):
        return 0


def test_vidur_host_is_fresh_builtin_only_and_the_default(vidur_host, monkeypatch):
    assert plugins.get_host() is vidur_host
    names = {vidur_host.pm.get_name(p) for p in vidur_host.pm.get_plugins()}
    assert names == set(plugins.BUILTIN_PLUGINS)
    assert "sarathi" in vidur_host.names("replica_scheduler")


def test_vidur_host_restores_the_previous_default(pytester):
    pytester.makepyfile(
        """
        from vidur import plugins

        SENTINEL = object()

        def test_set():
            plugins.set_host(SENTINEL)

        def test_uses(vidur_host):
            assert plugins.get_host() is vidur_host

        def test_after():
            assert plugins._DEFAULT is SENTINEL
        """
    )
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_vidur_register_a_class(vidur_register, vidur_host):
    plugin = vidur_register(_Mine)
    assert vidur_host.get("global_scheduler", "mine") is _Mine
    assert vidur_host.entry("global_scheduler", "mine").plugin == "test:mine"
    assert vidur_host.pm.is_registered(plugin)


def test_vidur_register_a_module_like_object(vidur_register, vidur_host):
    class Plugin:
        @hookimpl
        def vidur_register_global_schedulers(self, register):
            register(_Mine)

    vidur_register(Plugin(), name="objplugin")
    assert vidur_host.entry("global_scheduler", "mine").plugin == "objplugin"


def test_vidur_register_is_undone_after_the_test(pytester):
    pytester.makepyfile(
        """
        from vidur.scheduler.global_base import GlobalScheduler

        class Mine(GlobalScheduler):
            name = "mine"
            def route(self, req):
                return 0

        def test_a(vidur_register, vidur_host):
            vidur_register(Mine)
            assert "mine" in vidur_host.names("global_scheduler")
            test_a.host = vidur_host

        def test_b():
            host = test_a.host
            assert "mine" not in host.names("global_scheduler")
            assert len(host.pm.get_plugins()) == len(__import__("vidur.plugins").plugins.BUILTIN_PLUGINS)
        """
    )
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)


# -- harnesses, requests, rng, tiny cluster ----------------------------------------------


def test_replica_harness_by_name_and_config_dict(replica_harness):
    h = replica_harness("sarathi", {"chunk_size": 8}, num_blocks=64, block_size=4)
    assert isinstance(h.scheduler, SarathiScheduler) and h.config.chunk_size == 8
    h.add(20, 3)
    batches = h.run()
    assert [b.tokens_of(0) for b in batches[:3]] == [8, 8, 4]
    assert batches[0].kv_blocks_used == 5  # 20 tokens in blocks of 4
    assert not h.unfinished


def test_replica_harness_on_batch_sees_every_batch(replica_harness):
    seen = []
    h = replica_harness(SarathiScheduler, {"chunk_size": 8}, on_batch=lambda s, b: seen.append(len(b)))
    h.add_trace([(0.0, 10, 2), (0.001, 4, 3)])
    batches = h.run()
    assert len(seen) == len(batches) > 0


def test_cluster_harness_records_routes(cluster_harness):
    h = cluster_harness(LeastOutstanding, num_replicas=3)
    h.add_many([(32, 4)] * 6)
    assert h.run() == [0, 1, 2, 0, 1, 2]
    assert [r.replica for r in h.requests] == [0, 1, 2, 0, 1, 2]
    assert not h.unfinished


def test_cluster_harness_takes_names(cluster_harness):
    h = cluster_harness("round_robin", num_replicas=2, scheduler_cls="vllm", scheduler_config={"max_batch_size": 2})
    assert isinstance(h.router, RoundRobin) and h.schedulers[0].config.max_batch_size == 2
    h.add_many([(8, 2)] * 3)
    assert h.run() == [0, 1, 0]


def test_make_request_counts_ids_per_test(make_request):
    a, b = make_request(), make_request(prompt=7, output=2, arrival=1.5)
    assert (a.id, b.id) == (0, 1)
    assert (b.prompt, b.output, b.arrival) == (7, 2, 1.5) and b.kv_len == 0


def test_vidur_rng_is_seeded(vidur_rng):
    assert vidur_rng.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)


def test_tiny_cluster_runs_a_small_simulation(tiny_cluster):
    result = tiny_cluster("vllm", num_requests=12, global_scheduler="round_robin")
    assert len(result.requests) == 12
    assert [r.replica for r in result.requests] == [0, 1] * 6
    assert all(np.isfinite(r.completion) for r in result.requests)
    assert result.scenario.model == "vidur/tiny-llama"


def test_tiny_cluster_with_a_registered_plugin_and_a_fixed_trace(tiny_cluster, vidur_register):
    vidur_register(_Mine)
    trace = Trace.from_rows([(0.0, 16, 4), (0.001, 8, 2), (0.002, 8, 2)])
    result = tiny_cluster(global_scheduler="mine", requests=trace)
    assert [r.replica for r in result.requests] == [0, 0, 0]
    assert [r.prompt for r in result.requests] == [16, 8, 8]


def test_tiny_cluster_step_mode_equals_fast_forward(tiny_cluster):
    a = tiny_cluster(num_requests=10, output_tokens=40)
    b = tiny_cluster(num_requests=10, output_tokens=40, step_mode=True)
    assert [r.completion for r in a.requests] == [r.completion for r in b.requests]


def test_vidur_distribution_looks_installed(vidur_distribution):
    vidur_distribution(
        """
        from vidur.hookspecs import hookimpl
        from vidur.scheduler.global_base import GlobalScheduler

        class Zero(GlobalScheduler):
            name = "zero"
            def route(self, req):
                return 0

        @hookimpl
        def vidur_register_global_schedulers(register):
            register(Zero)
        """,
        name="vidur-plugin-zero",
        version="2.0",
        entry_point="zero",
    )
    host = plugins.PluginHost(autoload=True, blocked=())
    entry = host.entry("global_scheduler", "zero")
    assert (entry.plugin, entry.distribution) == ("zero", "vidur-plugin-zero 2.0")


# -- Hypothesis strategies -----------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(pair=lengths(max_prompt=10, max_output=5), req=requests(max_prompt=10, max_output=5, max_arrival=2.0))
def test_lengths_and_requests(pair, req):
    assert 1 <= pair[0] <= 10 and 1 <= pair[1] <= 5
    assert isinstance(req, Request) and 1 <= req.prompt <= 10 and 0.0 <= req.arrival <= 2.0
    assert req.kv_len == 0 and req.blocks == 0


@settings(max_examples=40, deadline=None)
@given(trace=traces(max_size=12, max_prompt=20, max_output=10, max_gap=0.1))
def test_traces_are_sorted_and_bounded(trace):
    assert 1 <= len(trace) <= 12
    assert list(trace.arrivals) == sorted(trace.arrivals) and trace.arrivals[0] >= 0
    assert all(1 <= p <= 20 for p in trace.prompts) and all(1 <= o <= 10 for o in trace.outputs)
    table = trace.to_table()
    assert table.num_requests == len(trace)
    reqs = trace.make_requests()
    assert [r.id for r in reqs] == list(range(len(trace)))


def test_trace_rejects_unsorted_arrivals():
    with pytest.raises(ValueError, match="sorted"):
        Trace.from_rows([(1.0, 1, 1), (0.5, 1, 1)])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=workloads(max_requests=20, max_tokens=256))
def test_workload_sections_are_valid_scenarios(section):
    from vidur.scenario import scenario_from_dict
    from vidur.workload.workload import build_requests

    host = plugins.PluginHost(autoload=False, blocked=())
    sc = scenario_from_dict({"model": "vidur/tiny-llama", "workload": section}, host)
    wl = sc.workload
    arrival = host.get("workload.arrival", wl.arrival.name)(wl.arrival.config)
    lens = host.get("workload.length", wl.lengths.name)(wl.lengths.config)
    table = build_requests(arrival, lens, np.random.default_rng(0), num_requests=wl.num_requests)
    assert table.num_requests == section["num_requests"]
    assert int((table.prompt + table.output).max()) <= 256


@settings(max_examples=10, deadline=None)
@given(trace=traces(max_size=8), data=st.data())
def test_strategies_drive_the_harness(trace, data):
    from vidur.testing.harness import ReplicaHarness

    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=data.draw(st.integers(4, 64))),
                       num_blocks=64, block_size=4)
    h.add_trace(trace)
    h.run()
    assert not h.unfinished
