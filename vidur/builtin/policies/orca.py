"""Orca: iteration-level batching with KV reserved for each request's maximum."""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.entities.request import Request
from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig


@attrs.frozen(kw_only=True)
class OrcaConfig(SchedulerConfig):
    """``max_tokens_per_request`` KV tokens are reserved at admission (None:
    the request's own prompt + output, as if its output length were known)."""

    max_tokens_per_request: int | None = None


class ReservingScheduler(ReplicaScheduler):
    """Shared by Orca and FasterTransformer: admission reserves a request's
    peak KV up front, so decodes never need blocks and never preempt."""

    lazy_decode = True

    def reserved_tokens(self, req: Request) -> int:
        own = req.prompt + req.output - 1
        cap = self.config.max_tokens_per_request
        return max(own, cap) if cap else own

    def step_running(self, batch: Batch) -> None:
        """Every ready running request takes its next step: the rest of its
        prompt, or one decode token (KV is reserved, so nothing can fail)."""
        self.decode_all(batch, self.ready_decoding())
        for req in self.ready_prefilling():
            batch.add(req, req.prefill_target - req.kv_len)

    def admit_reserving(self, batch: Batch) -> None:
        """Admit waiting requests FIFO while the batch cap and memory allow."""
        kv, waiting = self.kv, self.waiting
        while waiting and len(self.running) < self.config.max_batch_size:
            req = waiting[0]
            blocks = kv.blocks_for(self.reserved_tokens(req))
            if not kv.can_admit(req, blocks):
                break
            self.admit(req, blocks)
            batch.add(req, req.prefill_target - req.kv_len)


class OrcaScheduler(ReservingScheduler):
    """Every running request takes its next step (whole prompt or one decode
    token) and new requests join up to the batch cap; no chunking."""

    name = "orca"
    Config = OrcaConfig

    def schedule(self) -> Batch | None:
        batch = Batch()
        self.step_running(batch)
        self.admit_reserving(batch)
        return batch or None

    def is_steady(self, batch: Batch) -> bool:
        return self.steady_decode(batch)
