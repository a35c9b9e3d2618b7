"""The replica batching API that every replica scheduler is written against.

A policy sees ``waiting`` (a deque, FIFO), ``running`` (admitted requests,
ordered by request id = arrival order) split into ``prefilling`` and
``decoding`` (same order), the KV block manager ``kv`` and its ``config``
limits, and returns the next :class:`Batch` from
:meth:`ReplicaScheduler.schedule`. Helpers: :meth:`admit`, :meth:`preempt`,
:meth:`decode_all`, :meth:`ready`. The engine applies the batch's progress
when it finishes.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from operator import attrgetter
from typing import ClassVar

import attrs

from vidur.entities.batch import Batch
from vidur.entities.request import INF, Request
from vidur.errors import VidurError
from vidur.scheduler.decode_group import DecodeGroup
from vidur.scheduler.kv import KVBlockManager

_by_id = attrgetter("id")


def _insert(queue: list[Request], req: Request) -> None:
    """Insert keeping the list ordered by request id (arrival order)."""
    if not queue or queue[-1].id < req.id:
        queue.append(req)
    else:
        insort(queue, req, key=_by_id)


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
    decode iterations (results must equal stepping them one by one).

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
    #: whether the engine this policy models caches prefixes by default
    #: (vLLM V1, SGLang: yes; vLLM v0, Sarathi-Serve, Orca, FasterTransformer: no)
    prefix_caching_default: ClassVar[bool] = False

    def __init__(self, config: SchedulerConfig, kv: KVBlockManager, replica_id: int = 0, num_stages: int = 1):
        self.config = config
        self.kv = kv
        self.replica_id = replica_id
        self.num_stages = num_stages
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.prefilling: list[Request] = []
        self.decoding: list[Request] = []
        self.group = DecodeGroup(kv) if self.lazy_decode and num_stages == 1 else None
        self.group_active = self.group is not None
        self.num_in_flight = 0  # batches in the pipeline
        self.preempted_in_schedule = False
        self.now = 0.0  # set by the engine before each schedule() call

    # -- what policies implement -------------------------------------------
    def schedule(self) -> Batch | None:
        """Form the next batch from ``waiting``/``running`` or return None."""
        raise NotImplementedError

    def is_steady(self, batch: Batch) -> bool:
        """True if, absent arrivals and completions, ``schedule`` would form this
        same decode-only batch again (with one more token of context each)."""
        return False

    def on_repeat(self, times: int) -> None:
        """The engine repeated the last (steady) batch ``times`` more times."""

    def reserved_tokens(self, req: Request) -> int:
        """KV tokens ``req`` needs at its peak under this policy (for fit checks)."""
        return req.prompt + req.output - 1

    # -- helpers for policies ----------------------------------------------
    def add_request(self, req: Request) -> None:
        """A new request routed to this replica."""
        self.waiting.append(req)

    def ready(self) -> list[Request]:
        """Running requests not inside a batch still in the pipeline."""
        if self.num_in_flight == 0:
            return self.running
        return [r for r in self.running if not r.in_flight]

    def ready_decoding(self) -> list[Request]:
        """Decoding requests not inside a batch still in the pipeline."""
        if self.num_in_flight == 0:
            return self.decoding
        return [r for r in self.decoding if not r.in_flight]

    def ready_prefilling(self) -> list[Request]:
        """Prefilling requests not inside a batch still in the pipeline."""
        if self.num_in_flight == 0:
            return self.prefilling
        return [r for r in self.prefilling if not r.in_flight]

    def sync_decoding(self) -> None:
        """Bring every decoding request's ``kv_len``/``blocks``/``last_token`` up to date."""
        if self.group is not None and self.group_active:
            self.group.sync_all(self.decoding)

    def admit(self, req: Request, blocks: int) -> None:
        """Move the head of ``waiting`` into ``running`` with ``blocks`` KV blocks.

        Check ``kv.can_admit(req, blocks)`` first. With prefix caching the
        request's cached prefix is already computed afterwards: schedule
        ``req.prefill_remaining`` tokens, not ``req.prefill_target``."""
        popped = self.waiting.popleft()
        assert popped is req, "admit() takes the head of the waiting queue"
        self.kv.admit(req, blocks)  # with a prefix cache, req.kv_len starts after its cached prefix
        if req.first_scheduled == INF:
            req.first_scheduled = self.now
        _insert(self.running, req)
        _insert(self.prefilling, req)

    def prefill_done(self, req: Request) -> None:
        """Called by the engine when ``req`` finished a prefill and will decode."""
        self.prefilling.remove(req)
        _insert(self.decoding, req)
        if self.group_active and not self.group.join(req):
            self._dissolve_group()
            self.group = None  # a member with spare KV blocks: step requests one by one
            self.group_active = False

    def _dissolve_group(self) -> None:
        """Bring members up to date and stop tracking them as a group."""
        g = self.group
        for r in self.decoding:
            if r.group_base is not None:
                g.sync(r)
                r.group_base = None
        self.group = DecodeGroup(self.kv)
        self.group_active = False

    def _rebuild_group(self) -> None:
        g = self.group
        for r in self.decoding:
            g.join(r)
        self.group_active = True

    def _leave(self, req: Request) -> None:
        """Take ``req`` off the running lists (synced if grouped)."""
        if req.group_base is not None:
            self.group.leave(req)
        self._unlist(req)

    def _unlist(self, req: Request) -> None:
        self.running.remove(req)
        if req in self.prefilling:  # short list: a few requests at most
            self.prefilling.remove(req)
        else:
            self.decoding.remove(req)

    def preempt(self, req: Request) -> None:
        """Evict ``req`` (recompute): free its KV, requeue it at the front of ``waiting``."""
        self._leave(req)
        self.kv.free_request(req)
        generated = req.generated
        req.recomputed += req.kv_len
        req.kv_len = 0
        req.prefill_target = req.prompt + generated
        req.preemptions += 1
        self.waiting.appendleft(req)
        self.preempted_in_schedule = True

    def victim(self, exclude_in_flight: bool = True) -> Request | None:
        """The most recently arrived running request (preemption candidate)."""
        for r in reversed(self.running):
            if not (exclude_in_flight and r.in_flight):
                return r
        return None

    def decode_or_preempt(self, batch: Batch, req: Request) -> bool:
        """Add ``req``'s decode step to ``batch``, preempting the newest running
        requests while its next KV block does not fit. False if ``req`` itself
        was preempted."""
        kv = self.kv
        while not kv.ensure(req, req.kv_len + 1):
            victim = self.victim()
            self.preempt(victim)
            if victim is req:
                return False
        batch.add(req, 1)
        return True

    def decode_all(self, batch: Batch, reqs: list[Request]) -> None:
        """Add a decode step for each of ``reqs`` (all past their prefill, in
        priority order), growing their KV by a block where needed; if the
        blocks do not all fit, fall back to :meth:`decode_or_preempt` one by one."""
        kv = self.kv
        group = self.group
        if group is not None:
            if reqs is self.decoding and reqs:
                if not self.group_active:
                    self._rebuild_group()
                need = group.crossers(1)
                if need <= kv.num_blocks - kv.used:
                    kv.used += need
                    batch.add_group_step(reqs, group)
                    return
            if self.group_active and group.size:
                self._dissolve_group()
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

    def finish(self, req: Request) -> None:
        """``req`` produced its last token: release it."""
        if req.group_base is not None:
            self.group.leave(req)
        self._unlist(req)
        self.kv.free_request(req)

    def steady_decode(self, batch: Batch) -> bool:
        """The common steady-state test: a decode-only batch of every running
        request, formed without preemption."""
        return (
            not self.preempted_in_schedule
            and batch.shape.num_prefill == 0
            and len(batch.decodes) == len(self.running)
        )

    @property
    def num_outstanding(self) -> int:
        """Queued plus running requests (what ``lor`` balances)."""
        return len(self.waiting) + len(self.running)
