"""Step a replica scheduler through hand-written arrivals and inspect each batch."""

from __future__ import annotations

from typing import Sequence

import attrs
import numpy as np

from vidur.engine.loop import EventLoop, ReplicaState
from vidur.entities.request import Request
from vidur.estimate.base import RuntimeEstimator
from vidur.scheduler.base import ReplicaScheduler
from vidur.scheduler.global_base import GlobalScheduler
from vidur.scheduler.kv import KVBlockManager
from vidur.testing.fakes import LinearEstimator


@attrs.frozen
class BatchView:
    """A snapshot of one formed batch: when, which requests, tokens each, KV used."""

    time: float
    requests: tuple[int, ...]
    tokens: tuple[int, ...]
    kv_blocks_used: int
    running: tuple[int, ...]
    waiting: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return sum(self.tokens)

    def tokens_of(self, request_id: int) -> int:
        """Tokens scheduled for ``request_id`` in this batch (0 if absent)."""
        for r, n in zip(self.requests, self.tokens):
            if r == request_id:
                return n
        return 0

    @property
    def is_prefill_only(self) -> bool:
        return False if not self.requests else all(n > 1 for n in self.tokens)


class _Single(GlobalScheduler):
    name = "_single"

    def route(self, req: Request) -> int:
        return 0


class _Recording:
    """Wraps ``schedule`` to snapshot every batch it forms."""

    def __init__(self, sched: ReplicaScheduler, out: list[BatchView]):
        self.sched, self.out = sched, out
        self.inner = sched.schedule

    def __call__(self):
        batch = self.inner()
        s = self.sched
        if batch is not None:
            self.out.append(
                BatchView(
                    time=s.now,
                    requests=tuple(r.id for r in batch.requests),
                    tokens=tuple(batch.tokens),
                    kv_blocks_used=s.kv.used,
                    running=tuple(r.id for r in s.running),
                    waiting=tuple(r.id for r in s.waiting),
                )
            )
        return batch


class ReplicaHarness:
    """Drives one replica of ``scheduler_cls`` through requests, recording batches.

    >>> h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=8), num_blocks=64)
    >>> h.add(prompt=20, output=3)            # arrives at t=0
    >>> batches = h.run()                      # every batch formed, in order
    """

    def __init__(
        self,
        scheduler_cls: type[ReplicaScheduler],
        config=None,
        *,
        num_blocks: int = 1024,
        block_size: int = 16,
        estimator: RuntimeEstimator | None = None,
        num_stages: int = 1,
        fast_forward: bool = False,
    ):
        self.scheduler_cls = scheduler_cls
        self.config = config if config is not None else scheduler_cls.Config()
        bs = scheduler_cls.kv_block_size or block_size
        self.kv = KVBlockManager(num_blocks * block_size // bs, bs)
        self.scheduler = scheduler_cls(self.config, self.kv, 0, num_stages)
        self.estimator = estimator or LinearEstimator()
        self.num_stages = num_stages
        self.fast_forward = fast_forward
        self.requests: list[Request] = []
        self.batches: list[BatchView] = []

    def add(self, prompt: int, output: int, at: float = 0.0) -> Request:
        """A request arriving at time ``at`` (requests must be added in time order)."""
        if self.requests and at < self.requests[-1].arrival:
            raise ValueError("add requests in arrival order")
        req = Request(len(self.requests), float(at), int(prompt), int(output))
        self.requests.append(req)
        return req

    def add_many(self, lengths: Sequence[tuple[int, int]], at: float = 0.0) -> list[Request]:
        return [self.add(p, o, at) for p, o in lengths]

    def run(self, max_time: float | None = None) -> list[BatchView]:
        """Run until every request finished (or ``max_time``); returns all batches."""
        self.scheduler.schedule = _Recording(self.scheduler, self.batches)
        state = ReplicaState(0, self.scheduler, self.estimator, self.estimator.model.num_layers, self.num_stages)
        router = _Single(None, [self.scheduler], np.random.default_rng(0))
        self.loop = EventLoop(self.requests, [state], router, fast_forward=self.fast_forward, max_time=max_time)
        self.loop.run()
        return self.batches

    @property
    def unfinished(self) -> list[Request]:
        return [r for r in self.requests if r.generated < r.output]
