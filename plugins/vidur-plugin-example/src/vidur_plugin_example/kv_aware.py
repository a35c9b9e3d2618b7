"""kv_aware: route each request to the replica with the least KV pressure."""

from __future__ import annotations

import attrs

from vidur.entities.request import Request
from vidur.errors import VidurError
from vidur.scheduler.global_base import GlobalScheduler


@attrs.frozen(kw_only=True)
class KVAwareConfig:
    """``queued_weight`` scales queued prompt tokens against KV tokens held."""

    queued_weight: float = 1.0

    def __attrs_post_init__(self):
        if not self.queued_weight >= 0:
            raise VidurError(f"queued_weight must be >= 0, got {self.queued_weight}")


class KVAwareRouter(GlobalScheduler):
    """The replica with the lowest KV pressure: KV tokens in use plus
    ``queued_weight`` x the prompt tokens of its queued requests, as a
    fraction of its KV capacity. Ties: fewest outstanding requests, then the
    lowest index. Unlike ``lor`` it sees that a few long requests load a
    replica more than many short ones."""

    name = "kv_aware"
    Config = KVAwareConfig
    needs_live_state = False  # see route()

    def route(self, req: Request) -> int:
        # Reads only kv.used and the waiting queue, which are exact at every
        # arrival even when the engine fast-forwards decode runs (it stops each
        # run at the next arrival and allocates KV step by step in advance), so
        # fast-forward stays on. A router reading kv_len or generated of running
        # requests would need needs_live_state = True.
        w = self.config.queued_weight
        best, best_key = 0, None
        for i, rep in enumerate(self.replicas):
            kv = rep.kv
            queued = sum(r.prefill_target for r in rep.waiting) if w else 0
            pressure = (kv.used * kv.block_size + w * queued) / (kv.num_blocks * kv.block_size)
            key = (pressure, rep.num_outstanding)
            if best_key is None or key < best_key:
                best, best_key = i, key
        return best
