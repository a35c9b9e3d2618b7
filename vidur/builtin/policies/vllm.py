"""vLLM (v0) scheduling: prefill-prioritising, whole prompts, preempt newest."""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.errors import VidurError
from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig


@attrs.frozen(kw_only=True)
class VLLMConfig(SchedulerConfig):
    """``max_tokens_in_batch`` bounds padded prefill tokens (count × longest
    prompt); ``watermark_fraction`` of blocks stays free at admission."""

    max_tokens_in_batch: int = 4096
    watermark_fraction: float = 0.01

    def __attrs_post_init__(self):
        if self.max_tokens_in_batch < 1:
            raise VidurError(f"max_tokens_in_batch must be >= 1, got {self.max_tokens_in_batch}")
        if not 0 <= self.watermark_fraction < 1:
            raise VidurError(f"watermark_fraction must be in [0, 1), got {self.watermark_fraction}")


class VLLMScheduler(ReplicaScheduler):
    """Admit waiting requests FIFO while their prompts fit; if any were
    admitted the iteration is prefill-only, otherwise decode every running
    request, preempting the most recently arrived when KV runs out.

    A prompt longer than ``max_tokens_in_batch`` is admitted alone.
    """

    name = "vllm"
    Config = VLLMConfig
    lazy_decode = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.watermark = int(self.config.watermark_fraction * self.kv.num_blocks)

    def schedule(self) -> Batch | None:
        batch = Batch()
        cfg, kv, waiting = self.config, self.kv, self.waiting
        longest = 0
        while waiting and len(self.running) < cfg.max_batch_size:
            req = waiting[0]
            tokens = req.prefill_target
            padded = max(longest, tokens) * (len(batch) + 1)
            if padded > cfg.max_tokens_in_batch and batch:
                break
            blocks = kv.blocks_for(tokens)
            if not kv.can_admit(req, blocks, self.watermark):
                break
            self.admit(req, blocks)
            batch.add(req, tokens - req.kv_len)
            longest = max(longest, tokens)
        if batch:
            return batch
        self.decode_all(batch, self.ready_decoding())
        return batch or None

    def is_steady(self, batch: Batch) -> bool:
        return self.steady_decode(batch)
