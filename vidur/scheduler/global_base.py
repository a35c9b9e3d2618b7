"""The cluster-level routing API."""

from __future__ import annotations

from typing import ClassVar, Sequence

import attrs
import numpy as np

from vidur.entities.request import Request
from vidur.scheduler.base import ReplicaScheduler


class GlobalScheduler:
    """Routes each arriving request to a replica.

    Subclasses set ``name`` and ``Config`` and implement :meth:`route`,
    which sees every replica's scheduler (queues, KV manager). Queues,
    request counts and ``kv.used`` are exact whenever ``route`` runs. A
    router that reads per-request progress (``kv_len``, ``generated``,
    ``last_token``) calls ``replica.sync_decoding()`` first and sets
    ``needs_live_state = True``: the engine then steps every iteration
    instead of fast-forwarding.

    A router whose :meth:`route` depends only on the request and on its own
    state and ``rng`` -- never on any replica's state -- may set
    ``decides_upfront = True``: the engine may then call :meth:`route` on
    every request in arrival order before simulating (the same calls, in the
    same order, as a sequential run makes) and simulate groups of replicas
    in separate processes (``simulation.workers``,
    :mod:`vidur.engine.parallel`). The default ``False`` keeps the run in one
    process, exact for any router.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = attrs.make_class("Config", {}, frozen=True)
    needs_live_state: ClassVar[bool] = False
    decides_upfront: ClassVar[bool] = False

    def __init__(self, config, replicas: Sequence[ReplicaScheduler], rng: np.random.Generator):
        self.config = config
        self.replicas = replicas
        self.rng = rng

    def route(self, req: Request) -> int:
        """Index of the replica that gets ``req``."""
        raise NotImplementedError
