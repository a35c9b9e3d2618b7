"""The KV-aware router, plus the vidur conformance suite."""

from __future__ import annotations

from vidur_plugin_example import KVAwareRouter

from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.testing.conformance import GlobalSchedulerConformance


class TestKVAwareConformance(GlobalSchedulerConformance):
    """Includes fast-forward == stepping, which backs needs_live_state = False."""

    scheduler = KVAwareRouter


class TestKVAwareBehindVLLM(GlobalSchedulerConformance):
    scheduler = KVAwareRouter
    replica_scheduler = VLLMScheduler
    replica_config = {"max_batch_size": 4, "watermark_fraction": 0.0}
    max_examples = 10


def test_long_requests_spread_by_kv_not_by_count(cluster_harness):
    h = cluster_harness(KVAwareRouter, num_replicas=2, num_blocks=64, block_size=4)
    h.add(200, 4, at=0.0)  # one long prompt on replica 0
    h.add(4, 4, at=0.0)
    h.add(4, 4, at=0.0)
    h.add(4, 4, at=0.0)
    routes = h.run()
    assert routes[0] == 0
    assert routes[1:] == [1, 1, 1]  # lor would alternate; the short ones avoid the loaded replica


def test_queued_weight_zero_counts_only_kv_in_use(cluster_harness):
    h = cluster_harness(KVAwareRouter, {"queued_weight": 0.0}, num_replicas=2)
    h.add_many([(16, 2)] * 4)
    routes = h.run()
    # nothing holds KV yet at t=0 (requests are queued), so ties go by outstanding requests
    assert routes == [0, 1, 0, 1]
