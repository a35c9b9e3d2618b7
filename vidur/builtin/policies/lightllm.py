"""LightLLM: token-granular KV, admission by worst-case future KV."""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.entities.request import Request
from vidur.errors import VidurError
from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig


@attrs.frozen(kw_only=True)
class LightLLMConfig(SchedulerConfig):
    """``max_waiting_iters`` decode iterations run between prefill attempts
    while requests are running; ``max_tokens_in_batch`` caps a prefill batch."""

    max_waiting_iters: int = 10
    max_tokens_in_batch: int = 8192

    def __attrs_post_init__(self):
        if self.max_waiting_iters < 1:
            raise VidurError(f"max_waiting_iters must be >= 1, got {self.max_waiting_iters}")
        if self.max_tokens_in_batch < 1:
            raise VidurError(f"max_tokens_in_batch must be >= 1, got {self.max_tokens_in_batch}")


def peak_future_tokens(sizes_and_remaining: list[tuple[int, int]]) -> int:
    """Peak KV tokens if every request runs to completion, each freeing its
    KV when done: max over t of Σ_{remaining ≥ t} (size + t)."""
    pairs = sorted(sizes_and_remaining, key=lambda p: p[1])
    alive_size = sum(s for s, _ in pairs)
    alive = len(pairs)
    peak = 0
    for size, remaining in pairs:
        # at t = remaining every request still alive holds size_i + t tokens
        peak = max(peak, alive_size + alive * remaining)
        alive_size -= size
        alive -= 1
    return peak


class LightLLMScheduler(ReplicaScheduler):
    """Alternates prefill and decode batches: a prefill batch of new requests
    (whole prompts) is tried when nothing runs or after ``max_waiting_iters``
    decode iterations; a request is admitted only if the worst-case future
    KV of all running requests plus it still fits."""

    name = "lightllm"
    Config = LightLLMConfig
    kv_block_size = 1
    lazy_decode = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decodes_since_prefill = 0

    def _future(self, req: Request) -> tuple[int, int]:
        # tokens held after the next step, and tokens still to be added
        return (req.kv_len, req.prompt + req.output - 1 - req.kv_len)

    def _try_prefill(self) -> Batch | None:
        self.sync_decoding()  # _future reads kv_len of running requests
        batch = Batch()
        kv, waiting = self.kv, self.waiting
        plan = [self._future(r) for r in self.running]
        tokens = 0
        while waiting and len(self.running) < self.config.max_batch_size:
            req = waiting[0]
            if batch and tokens + req.prefill_target > self.config.max_tokens_in_batch:
                break
            trial = plan + [(req.prefill_target, req.prompt + req.output - 1 - req.prefill_target)]
            if peak_future_tokens(trial) > kv.num_blocks * kv.block_size:
                break
            plan = trial
            self.admit(req, req.prefill_target)
            batch.add(req, req.prefill_target - req.kv_len)
            tokens += req.prefill_target - req.kv_len
        return batch or None

    def schedule(self) -> Batch | None:
        if self.waiting and (not self.running or self.decodes_since_prefill >= self.config.max_waiting_iters):
            batch = self._try_prefill()
            if batch is not None:
                self.decodes_since_prefill = 0
                return batch
        batch = Batch()
        self.decode_all(batch, self.ready_decoding())
        if batch:
            self.decodes_since_prefill += 1
        return batch or None

    def is_steady(self, batch: Batch) -> bool:
        return not self.waiting and self.steady_decode(batch)

    def on_repeat(self, times: int) -> None:
        self.decodes_since_prefill += times
