"""Memory-planner interface: how many KV-cache blocks a replica gets."""

from __future__ import annotations

from typing import ClassVar

import attrs

from vidur.hardware.spec import DeviceSpec
from vidur.model.spec import ModelSpec


@attrs.frozen
class MemoryPlan:
    """What a memory planner decided for one replica (per GPU of one stage).

    ``num_blocks`` KV blocks of ``block_size`` tokens each; a request's
    blocks hold its KV for *all* layers of the stage. Byte figures are per GPU.
    """

    num_blocks: int
    block_size: int
    kv_bytes_per_token: int
    weights_bytes: int
    activation_bytes: int
    kv_cache_bytes: int
    usable_bytes: int
    #: sliding-window layers' KV reserved per sequence slot (models mixing window and full layers)
    window_kv_bytes: int = 0

    @property
    def max_tokens(self) -> int:
        return self.num_blocks * self.block_size


class MemoryPlanner:
    """Decides the KV-cache capacity of one replica.

    Subclasses set ``name`` and ``Config`` and implement :meth:`plan`; a
    model that does not fit raises :class:`vidur.errors.VidurError` naming
    the numbers.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = attrs.make_class("Config", {}, frozen=True)

    def __init__(self, config):
        self.config = config

    def plan(self, model: ModelSpec, device: DeviceSpec, tp: int, pp: int) -> MemoryPlan:
        raise NotImplementedError
