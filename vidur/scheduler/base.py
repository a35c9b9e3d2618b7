"""The replica batching API that every replica scheduler is written against.

A policy sees ``waiting`` (a deque, FIFO), ``running`` (admitted requests,
ordered by request id = arrival order) split into ``prefilling`` and
``decoding`` (same order), the KV block manager ``kv``, its ``config``
limits, the scenario's ``slos`` and :meth:`ReplicaScheduler.batch_time`
(the estimator's price of a batch), and returns the next :class:`Batch` from
:meth:`ReplicaScheduler.schedule`. Helpers: :meth:`~ReplicaScheduler.admit`,
:meth:`~ReplicaScheduler.preempt`, :meth:`~ReplicaScheduler.decode_all`,
:meth:`~ReplicaScheduler.ready`. The engine keeps its own bookkeeping (the
lazy decode group, batches in flight, whether a call preempted) in a
:class:`~vidur.scheduler.book.ReplicaBook` and applies the batch's progress
when it finishes.
"""

from __future__ import annotations

from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Mapping

import attrs

from vidur.entities.batch import Batch
from vidur.entities.request import Request
from vidur.errors import PolicyOutputError, VidurError
from vidur.scheduler.book import ReplicaBook
from vidur.scheduler.kv import KVBlockManager

if TYPE_CHECKING:
    from vidur.estimate.base import RuntimeEstimator
    from vidur.scenario import SLO


def _positive(name: str):
    def check(inst, attribute, value):
        if value is not None and value < 1:
            raise VidurError(f"{name} must be >= 1, got {value}")

    return check


def _optional_bool(name: str):
    def check(inst, attribute, value):
        if value is not None and not isinstance(value, bool):
            raise VidurError(f"{name} must be true, false or null (the policy's default), got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class SchedulerConfig:
    """Limits every replica scheduler shares; policies subclass this."""

    max_batch_size: int = attrs.field(default=128, validator=_positive("max_batch_size"))
    #: automatic prefix caching in the KV block manager; None: the policy's
    #: ``prefix_caching_default`` (on for engines that cache by default)
    prefix_caching: bool | None = attrs.field(default=None, validator=_optional_bool("prefix_caching"))


class ReplicaScheduler:
    """Base class of replica batching policies.

    Subclasses set ``name``, a ``Config`` (subclass of
    :class:`SchedulerConfig`) and implement :meth:`schedule`. Set
    ``kv_block_size = 1`` for token-granular KV accounting. Override
    :meth:`is_steady` to let the engine fast-forward runs of identical
    decode iterations (results must equal stepping them one by one), and
    :meth:`victim` to choose which request a preemption evicts.

    ``lazy_decode = True`` lets the engine advance decoding requests as one
    group when :meth:`decode_all` is given the whole ``decoding`` list: their
    ``kv_len``, ``blocks`` and ``last_token`` are then brought up to date only
    when needed (preemption, completion, :meth:`sync_decoding`). Leave it
    False unless the policy never reads those fields of decoding requests
    without calling :meth:`sync_decoding` first.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = SchedulerConfig
    kv_block_size: ClassVar[int | None] = None
    lazy_decode: ClassVar[bool] = False
    #: the engine overlaps each step's host work with the previous GPU step (vLLM V1's
    #: async scheduling, SGLang's overlap scheduler): a step takes max(device, host)
    host_overlap: bool = False
    #: whether the engine this policy models caches prefixes by default
    #: (vLLM V1, SGLang: yes; vLLM v0, Sarathi-Serve, Orca, FasterTransformer: no)
    prefix_caching_default: ClassVar[bool] = False
    #: the serving engine whose kernels this policy's runs are meant to price (``"vLLM V1"``,
    #: ``"SGLang"``; None: a batching policy on any kernels). ``runtime_estimator: auto`` then
    #: passes over profiles of vidur's reference executor (PyTorch's unfused operators, not the
    #: engine's kernels) and takes the roofline, whose defaults model the engine (see
    #: :class:`vidur.estimate.base.PricingTarget`)
    models_engine: ClassVar[str | None] = None

    def __init__(
        self,
        config: SchedulerConfig,
        kv: KVBlockManager,
        replica_id: int = 0,
        num_stages: int = 1,
        *,
        estimator: RuntimeEstimator | None = None,
        slos: Mapping[str, SLO] | None = None,
        reservations: Mapping[str, int] | None = None,
    ):
        self.config = config
        self.kv = kv
        self.replica_id = replica_id
        self.num_stages = num_stages
        #: the scenario's latency targets, ``{"ttft": SLO(quantile, max_s), ...}``
        self.slos: Mapping[str, SLO] = dict(slos or {})
        self.now = 0.0  # set by the engine before each schedule() call
        self._reservations = MappingProxyType(dict(reservations or {}))
        self._estimator = estimator
        self._book = ReplicaBook(kv, self.lazy_decode and num_stages == 1)

    # -- what a policy reads -------------------------------------------------
    @property
    def waiting(self) -> deque[Request]:
        """Queued requests: arrivals at the back, preempted requests at the front.
        Reorder it in place if you like (``srpf`` does)."""
        return self._book.waiting

    @property
    def running(self) -> list[Request]:
        """Admitted requests, ordered by id (arrival order)."""
        return self._book.running

    @property
    def reservations(self) -> Mapping[str, int]:
        """KV blocks (of ``kv.block_size`` tokens) the memory planner set aside outside
        ``kv.num_blocks``, by name (``{"adapters": 64}``; empty by default), read-only."""
        return self._reservations

    @property
    def prefilling(self) -> list[Request]:
        """Running requests still in a prefill, by id."""
        return self._book.prefilling

    @property
    def decoding(self) -> list[Request]:
        """Running requests past their prefill, by id."""
        return self._book.decoding

    def batch_time(self, batch: Batch) -> float:
        """Seconds ``batch`` would take on this replica by the run's runtime
        estimator: device time of every stage plus CPU overhead, or their max
        when the policy sets ``host_overlap`` (the event loop's arithmetic)."""
        est = self._estimator
        if est is None:
            raise VidurError(f"{type(self).__name__} was built without a runtime estimator; pass estimator=")
        s = batch.shape
        fwd, cpu = est.forward_time(s), est.cpu_overhead(s.num_seqs)
        if self.host_overlap:  # the next step's host work overlaps this GPU step: max, not sum
            return fwd if fwd > cpu else cpu
        return fwd + cpu

    # -- what policies implement -------------------------------------------
    def schedule(self) -> Batch | None:
        """Form the next batch from ``waiting``/``running`` or return None."""
        raise NotImplementedError

    def is_steady(self, batch: Batch) -> bool:
        """True if, absent arrivals and completions, ``schedule`` would form this
        same decode-only batch again (with one more token of context each)."""
        return False

    def steady_prefill(self, batch: Batch) -> tuple[int, bool] | None:
        """For a batch of one decode step of every decoding request plus one chunk of the only
        prefilling request: ``(cap, last)`` if, absent arrivals and completions, ``schedule``
        would form the same decodes plus that request's next chunk of ``min(remaining, cap)``
        tokens again, iteration after iteration (``last``: also for its last chunk when it is
        shorter than ``cap``, i.e. the leftover budget would admit nothing); None otherwise
        (the default). The engine then runs the prompt's chunks in one event (results must
        equal stepping, as for :meth:`is_steady`); it checks the rest itself: the KV blocks of
        the decodes, the request holding the blocks of its whole prefill, no prefix cache."""
        return None

    def on_repeat(self, times: int) -> None:
        """The engine repeated the last (steady) batch ``times`` more times (for a
        :meth:`steady_prefill` run: ran ``times`` more iterations of it)."""

    def check_memory_planner(self, name: str, config) -> str | None:
        """Why this policy cannot run beside memory planner ``name`` with ``config`` (one line),
        or None. Called once at setup; engine models whose arguments also enter the planner's
        arithmetic (SGLang's ``mem_fraction_static`` heuristic) check that both sections agree."""
        return None

    def reserved_tokens(self, req: Request) -> int:
        """KV tokens ``req`` needs at its peak under this policy (for fit checks)."""
        return req.prompt + req.output - 1

    def victim(self, req: Request, candidates: list[Request]) -> Request:
        """The request to evict (by recompute) because ``req``'s next decode
        needs a KV block that is not free. ``candidates`` are the running
        requests that may be evicted, oldest first: none is in the batch being
        formed or in a batch still in the pipeline, and ``req`` itself is among
        them (evicting it gives up its decode). Return one of them; the
        default evicts the newest (vLLM)."""
        return candidates[-1]

    # -- helpers for policies ----------------------------------------------
    def add_request(self, req: Request) -> None:
        """A new request routed to this replica (called by the engine)."""
        self._book.waiting.append(req)

    def ready(self) -> list[Request]:
        """Running requests not inside a batch still in the pipeline."""
        if self._book.num_in_flight == 0:
            return self._book.running
        return [r for r in self._book.running if not r.in_flight]

    def ready_decoding(self) -> list[Request]:
        """Decoding requests not inside a batch still in the pipeline."""
        if self._book.num_in_flight == 0:
            return self._book.decoding
        return [r for r in self._book.decoding if not r.in_flight]

    def ready_prefilling(self) -> list[Request]:
        """Prefilling requests not inside a batch still in the pipeline."""
        if self._book.num_in_flight == 0:
            return self._book.prefilling
        return [r for r in self._book.prefilling if not r.in_flight]

    def sync_decoding(self) -> None:
        """Bring every decoding request's ``kv_len``/``blocks``/``last_token`` up to date."""
        self._book.sync_decoding()

    def admit(self, req: Request, blocks: int) -> None:
        """Move ``req`` (any waiting request, usually the head) into ``running``
        with ``blocks`` KV blocks.

        Check ``kv.can_admit(req, blocks)`` first. With prefix caching the
        request's cached prefix is already computed afterwards: schedule
        ``req.prefill_remaining`` tokens, not ``req.prefill_target``."""
        if not self._book.admit(req, blocks, self.now):
            raise PolicyOutputError(
                "replica_scheduler", f"admit() was given request {req.id}, which is not in the waiting queue"
            )

    def preempt(self, req: Request) -> None:
        """Evict running ``req`` (recompute): free its KV, requeue it at the front
        of ``waiting``. Never preempt a request already in the batch being formed."""
        book = self._book
        book.leave(req)
        self.kv.free_request(req)
        generated = req.generated
        req.recomputed += req.kv_len
        req.kv_len = 0
        req.prefill_target = req.prompt + generated
        req.preemptions += 1
        book.waiting.appendleft(req)
        book.preempted = True

    def _choose_victim(self, batch: Batch, req: Request) -> Request:
        """Ask :meth:`victim` among the safe candidates and check its answer."""
        taken = {id(r) for r in batch.decodes}
        taken.update(id(r) for r in batch.prefills)
        cands = [r for r in self._book.running if not r.in_flight and id(r) not in taken]
        if not any(r is req for r in cands):
            raise PolicyOutputError(
                "replica_scheduler", f"decode_or_preempt() was given request {req.id}, which is already in the batch "
                "or not a running request outside the pipeline"
            )
        v = self.victim(req, cands)
        if not any(r is v for r in cands):
            raise PolicyOutputError(
                "replica_scheduler", f"victim() returned {v!r}, which is not one of the candidates it was given "
                f"(requests {[r.id for r in cands]})"
            )
        return v

    def decode_or_preempt(self, batch: Batch, req: Request) -> bool:
        """Add ``req``'s decode step to ``batch``, preempting :meth:`victim`
        while its next KV block does not fit. False if ``req`` itself was
        preempted."""
        kv = self.kv
        while not kv.ensure(req, req.kv_len + 1):
            victim = self._choose_victim(batch, req)
            self.preempt(victim)
            if victim is req:
                return False
        batch.add(req, 1)
        return True

    def decode_all(self, batch: Batch, reqs: list[Request]) -> None:
        """Add a decode step for each of ``reqs`` (all past their prefill, in
        priority order), growing their KV by a block where needed; if the
        blocks do not all fit, fall back to :meth:`decode_or_preempt` one by one."""
        kv, book = self.kv, self._book
        if book.group is not None:
            if reqs is book.decoding and reqs:
                need = book.grow_group()
                if need <= kv.num_blocks - kv.used:
                    kv.used += need
                    batch.add_group_step(reqs, book.group)
                    return
            book.dissolve_group()
        bs = kv.block_size
        free = kv.num_blocks - kv.used
        if len(reqs) > free:
            need = 0
            for r in reqs:
                if r.kv_len >= r.blocks * bs:
                    need += 1
            if need > free:
                for r in list(reqs):
                    if r.blocks:  # not preempted earlier in this loop
                        self.decode_or_preempt(batch, r)
                return
        grown = 0
        for r in reqs:
            if r.kv_len >= r.blocks * bs:
                r.blocks += 1
                grown += 1
        kv.used += grown
        batch.add_decodes(reqs)

    def steady_decode(self, batch: Batch) -> bool:
        """The common steady-state test: a decode-only batch of every running
        request, formed without preemption."""
        return (
            not self._book.preempted
            and batch.shape.num_prefill == 0
            and len(batch.decodes) == len(self._book.running)
        )

    @property
    def num_outstanding(self) -> int:
        """Queued plus running requests (what ``lor`` balances)."""
        return len(self._book.waiting) + len(self._book.running)
