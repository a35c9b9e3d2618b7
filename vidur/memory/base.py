"""Memory-planner interface: how many KV-cache blocks a replica gets."""

from __future__ import annotations

from typing import ClassVar, Mapping

import attrs

from vidur.hardware.spec import DeviceSpec
from vidur.model.spec import ModelSpec


@attrs.frozen
class MemoryPlan:
    """What a memory planner decided for one replica (per GPU of one stage).

    ``num_blocks`` KV blocks of ``block_size`` tokens each; a request's
    blocks hold its KV for *all* layers of the stage. Byte figures are per GPU.

    ``num_blocks`` is what requests may use; it may exceed what the memory
    arithmetic gives (an override such as vLLM's ``--num-gpu-blocks-override``):
    the simulation only checks that it is physically possible
    (:func:`physical_shortfall`). ``reservations`` names blocks of the same
    size the planner set aside for something else (``{"adapters": 64}``):
    they are not in ``num_blocks``, count against device memory, and every
    replica scheduler reads them as ``self.reservations``.
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
    #: named blocks set aside outside ``num_blocks`` (read by policies as ``self.reservations``)
    reservations: Mapping[str, int] = attrs.field(factory=dict, hash=False)

    @property
    def max_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def reserved_blocks(self) -> int:
        return sum(self.reservations.values())


def physical_shortfall(plan: MemoryPlan, device: DeviceSpec) -> str | None:
    """Why ``plan`` cannot fit in one GPU of ``device`` (the KV of ``num_blocks`` plus the
    reserved blocks, the sliding-window reserve and the weights over the device's whole
    memory), in a few words; None when it can."""
    blocks = plan.num_blocks + plan.reserved_blocks
    kv = blocks * plan.block_size * plan.kv_bytes_per_token + plan.window_kv_bytes
    need = kv + plan.weights_bytes
    if need <= device.memory_bytes:
        return None
    held = f"{plan.num_blocks} blocks" + (f" + {plan.reserved_blocks} reserved" if plan.reserved_blocks else "")
    return (
        f"{held} of {plan.block_size} tokens need {kv / 1e9:.1f} GB of KV cache per GPU; with "
        f"{plan.weights_bytes / 1e9:.1f} GB of weights that is over the {device.memory_bytes / 1e9:.1f} GB "
        f"of a {device.name}"
    )


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
