"""SRPF on hand-written arrivals, plus the vidur conformance suite."""

from __future__ import annotations

from vidur_plugin_example import SRPFScheduler

from vidur.testing.conformance import ReplicaSchedulerConformance


class TestSRPFConformance(ReplicaSchedulerConformance):
    """Every property a vidur replica scheduler must keep; aging bounds the wait."""

    scheduler = SRPFScheduler
    config = {"chunk_size": 16, "max_wait": 0.02}
    token_budget = "chunk_size"
    strict_token_budget = True  # chunked prefills: even one long prompt stays within the budget
    extra_wait_s = 0.02  # SRPF may hold a long prompt back for up to max_wait


def test_short_prompt_overtakes_long_one(replica_harness):
    h = replica_harness(SRPFScheduler, {"chunk_size": 8, "max_batch_size": 1}, num_blocks=64, block_size=4)
    h.add(4, 2, at=0.0)  # occupies the only batch slot
    h.add(30, 2, at=0.0005)  # long prompt, arrives first
    h.add(5, 2, at=0.0006)  # short prompt, arrives later
    h.run()
    long_, short = h.requests[1], h.requests[2]
    assert short.first_scheduled < long_.first_scheduled


def test_aged_request_goes_first(replica_harness):
    # with max_wait = 0 every queued request counts as aged: plain arrival order
    h = replica_harness(SRPFScheduler, {"chunk_size": 8, "max_batch_size": 1, "max_wait": 0.0},
                        num_blocks=64, block_size=4)
    h.add(4, 2, at=0.0)
    h.add(30, 2, at=0.0005)
    h.add(5, 2, at=0.0006)
    h.run()
    assert h.requests[1].first_scheduled < h.requests[2].first_scheduled


def test_prefill_chunks_respect_the_budget_and_decodes_come_first(replica_harness):
    h = replica_harness(SRPFScheduler, {"chunk_size": 8}, num_blocks=64, block_size=4)
    h.add(3, 6, at=0.0)
    h.add(20, 2, at=0.0015)
    batches = h.run()
    assert all(b.num_tokens <= 8 for b in batches)
    mixed = [b for b in batches if 0 in b.requests and 1 in b.requests]
    assert mixed and all(b.tokens_of(0) == 1 for b in mixed)  # request 0 keeps decoding


def test_config_rejects_bad_values():
    import pytest

    from vidur.errors import VidurError

    with pytest.raises(VidurError, match="max_wait"):
        SRPFScheduler.Config(max_wait=-1)
    with pytest.raises(VidurError, match="chunk_size"):
        SRPFScheduler.Config(chunk_size=0)
