"""SRPF: shortest-remaining-prompt-first admission with aging, on chunked prefills."""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.entities.request import Request
from vidur.errors import VidurError
from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig


@attrs.frozen(kw_only=True)
class SRPFConfig(SchedulerConfig):
    """``chunk_size`` tokens per iteration; a request queued longer than
    ``max_wait`` seconds is admitted before any shorter one (aging)."""

    chunk_size: int = 512
    max_wait: float = 2.0
    watermark_fraction: float = 0.01

    def __attrs_post_init__(self):
        if self.chunk_size < 1:
            raise VidurError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not self.max_wait >= 0:
            raise VidurError(f"max_wait must be >= 0 seconds, got {self.max_wait}")
        if not 0 <= self.watermark_fraction < 1:
            raise VidurError(f"watermark_fraction must be in [0, 1), got {self.watermark_fraction}")


def _remaining(req: Request) -> int:
    return req.prefill_target - req.kv_len


class SRPFScheduler(ReplicaScheduler):
    """Sarathi-style iterations (decodes first, then prefill chunks up to the
    token budget ``chunk_size``), but prompt work goes to the request with the
    fewest prompt tokens left: running prefills in that order, then waiting
    requests. Short prompts overtake long ones, which cuts mean TTFT when
    lengths vary; a request that has waited ``max_wait`` seconds goes to the
    head of the queue, and the queue head is never skipped for lack of KV,
    so long prompts still get in."""

    name = "srpf"
    Config = SRPFConfig
    lazy_decode = True  # reads no kv_len/blocks of decoding requests

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.watermark = int(self.config.watermark_fraction * self.kv.num_blocks)

    def order_waiting(self) -> None:
        """Sort ``waiting`` into admission order: requests past ``max_wait``
        first (oldest first), then the rest by prompt tokens left (ties: arrival)."""
        waiting = self.waiting
        if len(waiting) < 2:
            return
        aged_before = self.now - self.config.max_wait

        def key(r: Request):
            if r.arrival <= aged_before:
                return (0, r.arrival, r.id)
            return (1, _remaining(r), r.id)

        ordered = sorted(waiting, key=key)
        waiting.clear()
        waiting.extend(ordered)

    def schedule(self) -> Batch | None:
        batch = Batch()
        budget = self.config.chunk_size
        decoding = self.ready_decoding()
        self.decode_all(batch, decoding if len(decoding) <= budget else decoding[:budget])
        budget -= len(batch.decodes)
        prefilling = self.ready_prefilling()
        if budget and prefilling:
            for req in sorted(prefilling, key=_remaining):
                if budget == 0:
                    break
                if req.blocks:  # not preempted by decode_all above
                    chunk = min(_remaining(req), budget)
                    batch.add(req, chunk)
                    budget -= chunk
        if budget and self.waiting:
            self.order_waiting()
            kv, waiting = self.kv, self.waiting
            while budget > 0 and waiting and len(self.running) < self.config.max_batch_size:
                req = waiting[0]
                blocks = kv.blocks_for(req.prefill_target)
                if not kv.can_admit(req, blocks, self.watermark):
                    break  # never skip the head: an aged long prompt waits for room, not forever
                self.admit(req, blocks)
                chunk = min(req.prefill_target - req.kv_len, budget)
                batch.add(req, chunk)
                budget -= chunk
        return batch or None

    def is_steady(self, batch: Batch) -> bool:
        # Aging can reorder the queue while decodes repeat, putting a request that
        # fits at its head; so only a decode-only batch formed with nothing waiting,
        # or with the batch cap or token budget binding, repeats unchanged.
        if not self.steady_decode(batch):
            return False
        cfg = self.config
        return not self.waiting or len(self.running) >= cfg.max_batch_size or len(batch.decodes) >= cfg.chunk_size


__all__ = ["SRPFConfig", "SRPFScheduler"]
