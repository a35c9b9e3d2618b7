"""Every built-in policy passes the plugin conformance suite (vidur.testing.conformance)."""

from __future__ import annotations

from vidur.builtin.policies.faster_transformer import FasterTransformerScheduler
from vidur.builtin.policies.lightllm import LightLLMScheduler
from vidur.builtin.policies.orca import OrcaScheduler
from vidur.builtin.policies.routing import LeastOutstanding, PrefixAware, RandomRouting, RoundRobin, SessionAffinity
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.sglang import SGLangScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.builtin.policies.vllm_v1 import VLLMV1Scheduler
from vidur.plugins import PluginHost
from vidur.testing.conformance import (
    GlobalSchedulerConformance,
    ReplicaSchedulerConformance,
)


class TestVLLM(ReplicaSchedulerConformance):
    scheduler = VLLMScheduler
    config = {"max_tokens_in_batch": 64, "watermark_fraction": 0.0}
    token_budget = "max_tokens_in_batch"  # a prompt longer than the budget runs alone


class TestSarathi(ReplicaSchedulerConformance):
    scheduler = SarathiScheduler
    config = {"chunk_size": 16}
    token_budget = "chunk_size"
    strict_token_budget = True  # chunked: no batch ever exceeds it


class TestOrca(ReplicaSchedulerConformance):
    scheduler = OrcaScheduler


class TestFasterTransformer(ReplicaSchedulerConformance):
    scheduler = FasterTransformerScheduler


class TestLightLLM(ReplicaSchedulerConformance):
    scheduler = LightLLMScheduler
    config = {"max_waiting_iters": 3, "max_tokens_in_batch": 64}
    token_budget = "max_tokens_in_batch"


class TestRoundRobin(GlobalSchedulerConformance):
    scheduler = RoundRobin


class TestRandom(GlobalSchedulerConformance):
    scheduler = RandomRouting


class TestLeastOutstanding(GlobalSchedulerConformance):
    scheduler = LeastOutstanding


class TestLeastOutstandingBehindVLLM(GlobalSchedulerConformance):
    """Routers over a preempting policy too."""

    scheduler = LeastOutstanding
    replica_scheduler = VLLMScheduler
    replica_config = {"max_batch_size": 4, "watermark_fraction": 0.0}
    max_examples = 10


class TestPrefixAware(GlobalSchedulerConformance):
    scheduler = PrefixAware
    replica_config = {"max_batch_size": 4, "prefix_caching": True}


class TestSessionAffinity(GlobalSchedulerConformance):
    scheduler = SessionAffinity


def test_every_builtin_policy_is_covered():
    host = PluginHost(autoload=False, blocked=())
    suites = [v for v in globals().values() if isinstance(v, type) and v.__name__.startswith("Test")]
    covered = {s.scheduler for s in suites}
    for kind in ("replica_scheduler", "global_scheduler"):
        for name in host.names(kind):
            entry = host.entry(kind, name)
            if entry.plugin.startswith("vidur.builtin."):
                assert entry.obj in covered, f"built-in {kind} {name!r} has no conformance test class here"


class TestVLLMV1(ReplicaSchedulerConformance):
    scheduler = VLLMV1Scheduler
    config = {"max_num_batched_tokens": 16}
    token_budget = "max_num_batched_tokens"
    strict_token_budget = True  # chunked: no batch ever exceeds it


class TestSGLang(ReplicaSchedulerConformance):
    scheduler = SGLangScheduler
    config = {"chunked_prefill_size": 16, "prefix_caching": False}
    token_budget = "chunked_prefill_size"
    strict_token_budget = True  # chunked: no prefill batch exceeds it; decode batches hold <= max_batch_size (4)


class TestSGLangLPM(TestSGLang):
    config = {"chunked_prefill_size": 16, "schedule_policy": "lpm", "max_prefill_tokens": 24}


class TestSGLangMixed(TestSGLang):
    config = {"chunked_prefill_size": 16, "enable_mixed_chunk": True, "schedule_conservativeness": 0.3,
              "prefix_caching": False}


# -- every policy again with automatic prefix caching on (shared prefixes, LRU
# eviction and re-hits after preemption under a small KV cache)


class TestVLLMCaching(TestVLLM):
    prefix_caching = True


class TestSarathiCaching(TestSarathi):
    prefix_caching = True


class TestOrcaCaching(TestOrca):
    prefix_caching = True


class TestFasterTransformerCaching(TestFasterTransformer):
    prefix_caching = True


class TestLightLLMCaching(TestLightLLM):
    prefix_caching = True


class TestVLLMV1Caching(TestVLLMV1):
    prefix_caching = True


class TestSGLangCaching(TestSGLang):
    config = {"chunked_prefill_size": 16}
    prefix_caching = True
