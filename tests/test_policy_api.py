"""The batching API's contract: what a policy may override and read, and
what the engine keeps to itself."""

from __future__ import annotations

import pytest

from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.entities.batch import Batch
from vidur.errors import PolicyOutputError
from vidur.scenario import SLO
from vidur.testing.harness import ReplicaHarness


class OldestFirstVictim(VLLMScheduler):
    """Evicts the oldest candidate; records what it was offered."""

    name = "oldest_victim"
    lazy_decode = False  # steps decodes one by one with decode_or_preempt
    offered: list = []

    def victim(self, req, candidates):
        type(self).offered.append(([r.id for r in candidates], [r.id for r in self._forming.decodes]))
        others = [r for r in candidates if r is not req]
        return others[0] if others else req

    def schedule(self):
        batch = self._forming = Batch()
        cfg, kv, waiting = self.config, self.kv, self.waiting
        while waiting and len(self.running) < cfg.max_batch_size:
            req = waiting[0]
            blocks = kv.blocks_for(req.prefill_target)
            if not kv.can_allocate(blocks):
                break
            self.admit(req, blocks)
            batch.add(req, req.prefill_target)
        if batch:
            return batch
        for req in list(self.ready_decoding()):
            if req.blocks:
                self.decode_or_preempt(batch, req)
        return batch or None


def test_an_overridden_victim_is_never_offered_a_request_already_in_the_batch():
    OldestFirstVictim.offered = []
    h = ReplicaHarness(OldestFirstVictim, VLLMScheduler.Config(watermark_fraction=0.0), num_blocks=6, block_size=4)
    h.add_many([(4, 6), (4, 6), (4, 6)])
    h.run()
    assert not h.unfinished
    assert OldestFirstVictim.offered, "KV ran out, so victim() must have been asked"
    for cands, in_batch in OldestFirstVictim.offered:
        assert not set(cands) & set(in_batch)
        assert cands == sorted(cands)
    # the oldest candidate was evicted, not the newest
    assert h.requests[0].preemptions or h.requests[1].preemptions


class WrongVictim(VLLMScheduler):
    name = "wrong_victim"

    def victim(self, req, candidates):
        return self.waiting[0] if self.waiting else object()


def test_a_victim_outside_the_candidates_is_refused():
    h = ReplicaHarness(WrongVictim, VLLMScheduler.Config(watermark_fraction=0.0), num_blocks=6, block_size=4)
    h.add_many([(4, 6), (4, 6), (4, 6)])
    with pytest.raises(PolicyOutputError, match=r"victim\(\) returned .*not one of the candidates"):
        h.run()


class ShortestFirst(SarathiScheduler):
    """Admits the waiting request with the shortest prompt first, wherever it is queued."""

    name = "shortest_first"

    def schedule(self):
        if self.waiting:
            req = min(self.waiting, key=lambda r: (r.prompt, r.id))
            blocks = self.kv.blocks_for(req.prefill_target)
            if len(self.running) < self.config.max_batch_size and self.kv.can_allocate(blocks):
                self.admit(req, blocks)
        return super().schedule()


def test_admission_is_not_limited_to_the_head_of_the_queue():
    h = ReplicaHarness(ShortestFirst, SarathiScheduler.Config(chunk_size=64), num_blocks=256, block_size=4)
    h.add_many([(60, 2), (50, 2), (4, 2)])
    batches = h.run()
    assert not h.unfinished
    assert batches[0].requests[0] == 2  # the short prompt went first
    assert h.requests[2].first_scheduled <= h.requests[0].first_scheduled


class SLOAware(SarathiScheduler):
    """Reads the scenario's SLOs and prices its batches."""

    name = "slo_aware"
    seen: list = []

    def schedule(self):
        batch = super().schedule()
        if batch is not None:
            type(self).seen.append((self.slos["ttft"].max_s, self.batch_time(batch)))
        return batch


def test_a_policy_reads_the_slos_and_prices_a_batch_with_the_runs_estimator():
    SLOAware.seen = []
    h = ReplicaHarness(SLOAware, num_blocks=256, block_size=4, slos={"ttft": SLO(quantile=0.9, max_s=0.5)})
    h.add_many([(40, 3), (8, 2)])
    h.run()
    assert SLOAware.seen and all(slo == 0.5 for slo, _ in SLOAware.seen)
    cols, _ = h.loop.batches.to_columns()
    priced = [t for _, t in SLOAware.seen]
    assert priced == pytest.approx(list(cols["end"] - cols["start"]))


class FlagWatcher(VLLMScheduler):
    name = "flag_watcher"
    flags: list = []

    def schedule(self):
        type(self).flags.append(self._book.preempted)
        return super().schedule()


def test_the_engine_resets_the_preemption_flag_before_every_schedule_call():
    # the built-ins no longer reset it; a stale flag would turn fast-forward off for good
    FlagWatcher.flags = []
    h = ReplicaHarness(FlagWatcher, VLLMScheduler.Config(watermark_fraction=0.0), num_blocks=6, block_size=4,
                       fast_forward=True)
    h.add_many([(4, 6), (4, 6), (4, 14)])
    h.run()
    assert not h.unfinished and any(r.preemptions for r in h.requests)
    assert FlagWatcher.flags and not any(FlagWatcher.flags)


def test_engine_bookkeeping_is_not_on_the_policy():
    s = SarathiScheduler(SarathiScheduler.Config(), __import__("vidur.scheduler.kv", fromlist=["x"]).KVBlockManager(8, 4))
    for name in ("group", "group_active", "num_in_flight", "preempted_in_schedule", "prefill_done", "finish"):
        assert not hasattr(s, name), name
    with pytest.raises(AttributeError):
        s.running = []  # the queues are the engine's; reorder them in place
