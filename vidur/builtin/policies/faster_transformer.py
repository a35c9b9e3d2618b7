"""FasterTransformer: static request-level batching."""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.builtin.policies.orca import OrcaConfig, ReservingScheduler


@attrs.frozen(kw_only=True)
class FasterTransformerConfig(OrcaConfig):
    """Same knobs as Orca: batch cap and KV reserved per request."""


class FasterTransformerScheduler(ReservingScheduler):
    """A batch is formed only when the previous one has fully finished; its
    requests prefill together, then decode together until the last one ends.
    New requests never join a running batch."""

    name = "faster_transformer"
    Config = FasterTransformerConfig

    def schedule(self) -> Batch | None:
        batch = Batch()
        if not self.running:
            self.admit_reserving(batch)
            return batch or None
        self.step_running(batch)
        return batch or None

    def is_steady(self, batch: Batch) -> bool:
        return self.steady_decode(batch)
