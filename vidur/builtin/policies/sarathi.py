"""Sarathi-Serve: chunked prefills piggybacked on decodes, stall-free."""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.errors import VidurError
from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig


@attrs.frozen(kw_only=True)
class SarathiConfig(SchedulerConfig):
    """``chunk_size`` is the token budget of every iteration."""

    chunk_size: int = 512
    watermark_fraction: float = 0.01

    def __attrs_post_init__(self):
        if self.chunk_size < 1:
            raise VidurError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 0 <= self.watermark_fraction < 1:
            raise VidurError(f"watermark_fraction must be in [0, 1), got {self.watermark_fraction}")


class SarathiScheduler(ReplicaScheduler):
    """Token budget = chunk size. Decodes first, then running requests still
    prefilling, then new requests FIFO; each prefill takes
    min(remaining prompt, remaining budget)."""

    name = "sarathi"
    Config = SarathiConfig
    lazy_decode = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.watermark = int(self.config.watermark_fraction * self.kv.num_blocks)

    def schedule(self) -> Batch | None:
        batch = Batch()
        budget = self.config.chunk_size
        decoding = self.ready_decoding()
        self.decode_all(batch, decoding if len(decoding) <= budget else decoding[:budget])
        budget -= len(batch.decodes)
        prefilling = self.ready_prefilling()
        if prefilling and budget:
            for req in list(prefilling):
                if budget == 0:
                    break
                if req.blocks:
                    chunk = min(req.prefill_target - req.kv_len, budget)
                    batch.add(req, chunk)
                    budget -= chunk
        kv, waiting, running = self.kv, self.waiting, self.running
        while budget > 0 and waiting and len(running) < self.config.max_batch_size:
            req = waiting[0]
            blocks = kv.blocks_for(req.prefill_target)
            if not kv.can_admit(req, blocks, self.watermark):
                break
            self.admit(req, blocks)
            chunk = min(req.prefill_target - req.kv_len, budget)
            batch.add(req, chunk)
            budget -= chunk
        return batch or None

    def is_steady(self, batch: Batch) -> bool:
        return self.steady_decode(batch)

    def steady_prefill(self, batch: Batch) -> tuple[int, bool] | None:
        # every decode first, then the one prefilling request's chunk of min(remaining, budget
        # left); a last chunk shorter than that leaves budget that would admit a waiting request
        if self._book.preempted or len(self.prefilling) != 1:
            return None
        return self.config.chunk_size - len(batch.decodes), not self.waiting
