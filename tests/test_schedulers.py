"""Replica schedulers on small hand-written situations."""

from __future__ import annotations

import pytest

from vidur.builtin.policies.faster_transformer import FasterTransformerScheduler
from vidur.builtin.policies.lightllm import LightLLMScheduler, peak_future_tokens
from vidur.builtin.policies.orca import OrcaScheduler
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.testing.harness import ReplicaHarness


def test_vllm_prefers_prefill_over_decode():
    h = ReplicaHarness(VLLMScheduler, num_blocks=64, block_size=4)
    h.add(8, 10, at=0.0)
    h.add(8, 2, at=0.0035)  # arrives while request 0 decodes
    batches = h.run()
    # the first batch formed after request 1 arrives is prefill-only with just request 1
    after = [b for b in batches if b.time >= 0.0035]
    assert after[0].requests == (1,) and after[0].tokens == (8,)
    assert all(b.is_prefill_only or all(t == 1 for t in b.tokens) for b in batches)


def test_vllm_padded_prefill_tokens_within_limit():
    cfg = VLLMScheduler.Config(max_tokens_in_batch=32)
    h = ReplicaHarness(VLLMScheduler, cfg, num_blocks=256, block_size=4)
    h.add_many([(10, 2), (12, 2), (5, 2), (9, 2)])
    batches = h.run()
    for b in batches:
        if b.is_prefill_only:
            assert max(b.tokens) * len(b.tokens) <= 32
    assert batches[0].requests == (0, 1)  # a third would pad to 3 x 12 > 32


def test_vllm_preempts_most_recent_arrival_and_recomputes():
    # 6 blocks of 4 tokens; three requests of 4-token prompts grow until KV runs out
    h = ReplicaHarness(VLLMScheduler, VLLMScheduler.Config(watermark_fraction=0.0), num_blocks=6, block_size=4)
    h.add_many([(4, 6), (4, 6), (4, 6)])
    batches = h.run()
    assert not h.unfinished
    preempted = [r for r in h.requests if r.preemptions]
    assert [r.id for r in preempted] == [2] and preempted[0].preemptions == 1  # the newest goes first
    # request 2 had its prompt (4) and 4 decoded tokens in KV when preempted: all 8 are recomputed, in one
    # whole prefill of the prompt plus the 5 tokens generated so far
    before = [b.tokens_of(2) for b in batches if 2 in b.requests and b.time < batches[5].time]
    assert before == [4, 1, 1, 1, 1] and 2 in batches[5].waiting
    assert preempted[0].recomputed == sum(before) == 8
    after = [b.tokens_of(2) for b in batches[5:] if 2 in b.requests]
    assert after[0] == 4 + 5 and all(t == 1 for t in after[1:])
    # it processed exactly its recomputed tokens more than an identical request that was never preempted
    assert sum(b.tokens_of(2) for b in batches) == sum(b.tokens_of(0) for b in batches) + preempted[0].recomputed
    assert all(b.kv_blocks_used <= 6 for b in batches)


def test_sarathi_never_exceeds_budget_and_decodes_first():
    cfg = SarathiScheduler.Config(chunk_size=16)
    h = ReplicaHarness(SarathiScheduler, cfg, num_blocks=256, block_size=4)
    h.add(40, 5, at=0.0)
    h.add(30, 5, at=0.0)
    h.add(50, 3, at=0.002)
    batches = h.run()
    assert all(b.num_tokens <= 16 for b in batches)
    for b in batches:
        # decodes (1 token, request past its prompt) come before prefill chunks in the batch
        kinds = [t == 1 and h.requests[r].prompt > 1 for r, t in zip(b.requests, b.tokens)]
        assert kinds == sorted(kinds, reverse=True)
    # a 40-token prompt is processed in chunks no larger than the budget
    assert [b.tokens_of(0) for b in batches[:3]] == [16, 16, 8]
    assert not h.unfinished


def test_sarathi_mixes_decodes_with_chunks():
    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=8), num_blocks=256, block_size=4)
    h.add(4, 20, at=0.0)
    h.add(30, 2, at=0.002)
    batches = h.run()
    mixed = [b for b in batches if len(set(b.tokens)) > 1 and 1 in b.tokens]
    assert mixed, "a prefill chunk should ride along with decodes"
    assert all(b.num_tokens <= 8 for b in batches)


def test_orca_batches_all_running_plus_new_up_to_cap():
    cfg = OrcaScheduler.Config(max_batch_size=3)
    h = ReplicaHarness(OrcaScheduler, cfg, num_blocks=256, block_size=4)
    h.add_many([(5, 4), (6, 4)])
    h.add_many([(7, 2), (3, 2)], at=0.0015)
    batches = h.run()
    assert all(len(b.requests) <= 3 for b in batches)
    joined = [b for b in batches if 2 in b.requests][0]
    assert set(joined.requests) == {0, 1, 2} and joined.tokens_of(2) == 7  # whole prompt, no chunking
    assert all(r.preemptions == 0 for r in h.requests)


def test_orca_reserves_kv_for_max_tokens():
    cfg = OrcaScheduler.Config(max_tokens_per_request=64)
    h = ReplicaHarness(OrcaScheduler, cfg, num_blocks=40, block_size=4)
    h.add_many([(4, 2)] * 3)
    batches = h.run()
    # each request reserves 64 tokens = 16 blocks: only two fit in 40 blocks at once
    assert batches[0].requests == (0, 1)
    assert batches[0].kv_blocks_used == 32


def test_faster_transformer_never_admits_into_running_batch():
    h = ReplicaHarness(FasterTransformerScheduler, num_blocks=256, block_size=4)
    h.add_many([(5, 6), (5, 2)])
    h.add(5, 2, at=0.0015)
    batches = h.run()
    first_batch_members = {0, 1}
    for b in batches:
        if 2 in b.requests:
            assert not (set(b.requests) & first_batch_members)
    # request 2 waits until both 0 and 1 completed
    assert h.requests[2].first_scheduled >= max(h.requests[0].completion, h.requests[1].completion)


def test_lightllm_peak_future_tokens():
    # sizes 10 and 0, remaining 2 and 5: at t=2 -> 12 + 2 = 14; at t=5 -> 5
    assert peak_future_tokens([(10, 2), (0, 5)]) == 14
    assert peak_future_tokens([]) == 0


def test_lightllm_admits_only_if_worst_case_fits_and_alternates():
    cfg = LightLLMScheduler.Config(max_waiting_iters=2)
    h = ReplicaHarness(LightLLMScheduler, cfg, num_blocks=10, block_size=4)  # 40 tokens, token-granular
    h.add_many([(10, 10), (10, 10), (10, 10)])
    batches = h.run()
    assert batches[0].requests == (0, 1)  # 2 x 19 = 38 fits; the third pushes the peak over 40
    third = [b for b in batches if 2 in b.requests][0]
    assert third.time >= min(h.requests[0].completion, h.requests[1].completion)
    assert all(b.kv_blocks_used <= 40 for b in batches)
    assert not h.unfinished
    assert all(r.preemptions == 0 for r in h.requests)


@pytest.mark.parametrize(
    "cls", [VLLMScheduler, SarathiScheduler, OrcaScheduler, FasterTransformerScheduler, LightLLMScheduler]
)
def test_batch_cap_respected(cls):
    h = ReplicaHarness(cls, cls.Config(max_batch_size=2), num_blocks=512, block_size=4)
    h.add_many([(6, 3)] * 5)
    batches = h.run()
    assert all(len(b.requests) <= 2 for b in batches)
    assert all(len(b.running) <= 2 for b in batches)
    assert not h.unfinished
