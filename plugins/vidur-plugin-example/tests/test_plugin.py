"""The plugin as vidur sees it: registration, names and whole simulations."""

from __future__ import annotations

import vidur_plugin_example
from vidur_plugin_example import KVAwareRouter, SRPFScheduler


def test_registers_its_policies(vidur_host, vidur_register):
    vidur_register(vidur_plugin_example)
    assert vidur_host.get("replica_scheduler", "srpf") is SRPFScheduler
    assert vidur_host.get("global_scheduler", "kv_aware") is KVAwareRouter
    entry = vidur_host.entry("replica_scheduler", "srpf")
    assert entry.plugin == "vidur_plugin_example"


def test_tiny_cluster_with_both_policies(vidur_register, tiny_cluster):
    vidur_register(vidur_plugin_example)
    result = tiny_cluster({"name": "srpf", "chunk_size": 64}, global_scheduler="kv_aware", num_requests=24)
    assert len(result.requests) == 24
    assert all(r.completion < float("inf") for r in result.requests)
    assert {r.replica for r in result.requests} == {0, 1}


def test_fast_forward_gives_the_same_run(vidur_register, tiny_cluster):
    vidur_register(vidur_plugin_example)
    a = tiny_cluster("srpf", global_scheduler="kv_aware", num_requests=20, output_tokens=32)
    b = tiny_cluster("srpf", global_scheduler="kv_aware", num_requests=20, output_tokens=32, step_mode=True)
    assert [r.completion for r in a.requests] == [r.completion for r in b.requests]
