"""Step schedulers through hand-written arrivals and inspect what they decide.

:class:`ReplicaHarness` drives one replica and records a :class:`BatchView`
per batch formed; :class:`ClusterHarness` drives a global scheduler over a
few replicas and records where each request was routed. Both use the cheap
:class:`~vidur.testing.fakes.LinearEstimator` unless given another estimator.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import attrs
import numpy as np

from vidur.engine.loop import EventLoop, ReplicaState
from vidur.entities.request import Request
from vidur.estimate.base import RuntimeEstimator
from vidur.scheduler.base import ReplicaScheduler
from vidur.scheduler.global_base import GlobalScheduler
from vidur.scheduler.prefix_cache import caching_enabled, make_kv_manager
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
    """Wraps ``schedule`` to snapshot every batch it forms (and call ``on_batch``)."""

    def __init__(self, sched: ReplicaScheduler, out: list[BatchView], on_batch=None):
        self.sched, self.out, self.on_batch = sched, out, on_batch
        self.inner = sched.schedule

    def __call__(self):
        batch = self.inner()
        s = self.sched
        if batch is not None:
            if self.on_batch is not None:
                self.on_batch(s, batch)
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


class _Arrivals:
    """Hand-written arrivals, shared by the harnesses (``self.requests``)."""

    requests: list[Request]

    def add(self, prompt: int, output: int, at: float = 0.0) -> Request:
        """A request arriving at time ``at`` (requests must be added in time order)."""
        if self.requests and at < self.requests[-1].arrival:
            raise ValueError("add requests in arrival order")
        req = Request(len(self.requests), float(at), int(prompt), int(output))
        self.requests.append(req)
        return req

    def add_many(self, lengths: Sequence[tuple[int, int]], at: float = 0.0) -> list[Request]:
        """Several ``(prompt, output)`` requests arriving together at ``at``."""
        return [self.add(p, o, at) for p, o in lengths]

    def add_trace(self, rows: Sequence[tuple[float, int, int]]) -> list[Request]:
        """Requests from ``(arrival, prompt, output)`` rows in arrival order
        (e.g. a :class:`vidur.testing.strategies.Trace`)."""
        return [self.add(p, o, at) for at, p, o in rows]

    @property
    def unfinished(self) -> list[Request]:
        """Requests that have not produced all their output tokens."""
        return [r for r in self.requests if r.generated < r.output]


class ReplicaHarness(_Arrivals):
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
        on_batch: Callable[[ReplicaScheduler, Any], None] | None = None,
        tree=None,
        slos: dict | None = None,
    ):
        """``num_blocks`` blocks of ``block_size`` tokens of KV cache (converted
        when the policy sets ``kv_block_size``); ``on_batch(scheduler, batch)``
        is called with every batch right after ``schedule()`` returns it. The
        KV manager caches prefixes when the config (or the policy's default)
        says so; ``tree`` is the :class:`~vidur.workload.content.PrefixTree`
        that requests' ``content`` refers to; ``slos`` (``{"ttft": SLO(...)}``)
        is what the policy sees as ``self.slos``."""
        self.scheduler_cls = scheduler_cls
        self.config = config if config is not None else scheduler_cls.Config()
        bs = scheduler_cls.kv_block_size or block_size
        self.kv = make_kv_manager(caching_enabled(scheduler_cls, self.config), num_blocks * block_size // bs, bs, tree)
        self.estimator = estimator or LinearEstimator()
        self.scheduler = scheduler_cls(self.config, self.kv, 0, num_stages, estimator=self.estimator, slos=slos)
        self.num_stages = num_stages
        self.fast_forward = fast_forward
        self.on_batch = on_batch
        self.requests: list[Request] = []
        self.batches: list[BatchView] = []

    def run(self, max_time: float | None = None) -> list[BatchView]:
        """Run until every request finished (or ``max_time``); returns all batches."""
        self.scheduler.schedule = _Recording(self.scheduler, self.batches, self.on_batch)
        state = ReplicaState(0, self.scheduler, self.estimator, self.estimator.model.num_layers, self.num_stages)
        router = _Single(None, [self.scheduler], np.random.default_rng(0))
        self.loop = EventLoop(self.requests, [state], router, fast_forward=self.fast_forward, max_time=max_time)
        self.loop.run()
        return self.batches


class _RecordingRouter:
    """Wraps ``route`` to remember every decision."""

    def __init__(self, router: GlobalScheduler, out: list):
        self.inner, self.out = router.route, out

    def __call__(self, req: Request):
        i = self.inner(req)
        self.out.append(i)
        return i


class ClusterHarness(_Arrivals):
    """Drives a global scheduler over ``num_replicas`` replicas, recording routes.

    >>> h = ClusterHarness(LeastOutstanding, num_replicas=3)
    >>> h.add_many([(32, 4)] * 6)
    >>> h.run()                                # the replica index of each request
    [0, 1, 2, 0, 1, 2]

    Replicas run ``scheduler_cls`` (default: Sarathi-Serve) with
    ``num_blocks`` x ``block_size`` tokens of KV each; the router gets a
    generator seeded with ``seed``.
    """

    def __init__(
        self,
        router_cls: type[GlobalScheduler],
        config=None,
        *,
        num_replicas: int = 2,
        scheduler_cls: type[ReplicaScheduler] | None = None,
        scheduler_config=None,
        num_blocks: int = 1024,
        block_size: int = 16,
        estimator: RuntimeEstimator | None = None,
        seed: int = 0,
        fast_forward: bool = False,
        tree=None,
    ):
        if scheduler_cls is None:
            from vidur.builtin.policies.sarathi import SarathiScheduler

            scheduler_cls = SarathiScheduler
        self.router_cls = router_cls
        self.config = config if config is not None else router_cls.Config()
        self.scheduler_cls = scheduler_cls
        self.scheduler_config = scheduler_config if scheduler_config is not None else scheduler_cls.Config()
        self.estimator = estimator or LinearEstimator()
        bs = scheduler_cls.kv_block_size or block_size
        caching = caching_enabled(scheduler_cls, self.scheduler_config)
        self.schedulers = [
            scheduler_cls(self.scheduler_config, make_kv_manager(caching, num_blocks * block_size // bs, bs, tree), i, 1,
                          estimator=self.estimator)
            for i in range(num_replicas)
        ]
        self.router = router_cls(self.config, self.schedulers, np.random.default_rng(seed))
        self.fast_forward = fast_forward
        self.requests: list[Request] = []
        self.routes: list[Any] = []

    def run(self, max_time: float | None = None) -> list[Any]:
        """Run until every request finished (or ``max_time``); returns the routes."""
        self.router.route = _RecordingRouter(self.router, self.routes)
        layers = self.estimator.model.num_layers
        states = [ReplicaState(i, s, self.estimator, layers, 1) for i, s in enumerate(self.schedulers)]
        self.loop = EventLoop(self.requests, states, self.router, fast_forward=self.fast_forward, max_time=max_time)
        self.loop.run()
        return self.routes
