"""Engine-side bookkeeping of one replica's requests (not part of the policy API).

A :class:`ReplicaBook` holds the queues a policy reads (``waiting``,
``running`` split into ``prefilling`` and ``decoding``), the lazy
:class:`~vidur.scheduler.decode_group.DecodeGroup` of decoding requests, the
number of batches in the pipeline and whether the current ``schedule()`` call
preempted. The event loop drives it (:meth:`begin`, :meth:`prefill_done`,
:meth:`finish`); the policy helpers of
:class:`~vidur.scheduler.base.ReplicaScheduler` (admit, preempt, decode_all)
change it through :meth:`admit`, :meth:`leave` and :meth:`grow_group`.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from operator import attrgetter

from vidur.entities.request import INF, Request
from vidur.scheduler.decode_group import DecodeGroup
from vidur.scheduler.kv import KVBlockManager

_by_id = attrgetter("id")


def _insert(queue: list[Request], req: Request) -> None:
    """Insert keeping the list ordered by request id (arrival order)."""
    if not queue or queue[-1].id < req.id:
        queue.append(req)
    else:
        insort(queue, req, key=_by_id)


class ReplicaBook:
    """The requests of one replica and the engine's state about them."""

    def __init__(self, kv: KVBlockManager, lazy: bool):
        self.kv = kv
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.prefilling: list[Request] = []
        self.decoding: list[Request] = []
        self.group = DecodeGroup(kv) if lazy else None
        self.group_active = lazy
        self.num_in_flight = 0  # batches in the pipeline
        self.preempted = False  # the current schedule() call preempted a request

    # -- driven by the event loop ----------------------------------------------
    def begin(self) -> None:
        """A ``schedule()`` call starts."""
        self.preempted = False

    def prefill_done(self, req: Request) -> None:
        """``req`` finished a prefill and will decode."""
        self.prefilling.remove(req)
        _insert(self.decoding, req)
        if self.group_active and not self.group.join(req):
            self.dissolve_group()
            self.group = None  # a member with spare KV blocks: step requests one by one
            self.group_active = False

    def finish(self, req: Request) -> None:
        """``req`` produced its last token: release it."""
        if req.group_base is not None:
            self.group.leave(req)
        self._unlist(req)
        self.kv.free_request(req)

    def sync_decoding(self) -> None:
        """Bring every decoding request's ``kv_len``/``blocks``/``last_token`` up to date."""
        if self.group is not None and self.group_active:
            self.group.sync_all(self.decoding)

    # -- changed by the policy helpers ------------------------------------------
    def admit(self, req: Request, blocks: int, now: float) -> bool:
        """Move ``req`` from ``waiting`` into ``running`` with ``blocks`` KV blocks;
        False (and no change) if ``req`` is not waiting."""
        waiting = self.waiting
        if waiting and waiting[0] is req:
            waiting.popleft()
        else:
            for i, r in enumerate(waiting):
                if r is req:
                    del waiting[i]
                    break
            else:
                return False
        self.kv.admit(req, blocks)  # with a prefix cache, req.kv_len starts after its cached prefix
        if req.first_scheduled == INF:
            req.first_scheduled = now
        _insert(self.running, req)
        _insert(self.prefilling, req)
        return True

    def leave(self, req: Request) -> None:
        """Take ``req`` off the running lists (synced first if grouped)."""
        if req.group_base is not None:
            self.group.leave(req)
        self._unlist(req)

    def _unlist(self, req: Request) -> None:
        self.running.remove(req)
        if req in self.prefilling:  # short list: a few requests at most
            self.prefilling.remove(req)
        else:
            self.decoding.remove(req)

    def grow_group(self) -> int | None:
        """Blocks the whole decode group needs for its next step, with the group
        ready to take it; None when the lazy group is not in use."""
        group = self.group
        if group is None:
            return None
        if not self.group_active:
            for r in self.decoding:
                group.join(r)
            self.group_active = True
        return group.crossers(1)

    def dissolve_group(self) -> None:
        """Bring members up to date and stop tracking them as a group."""
        g = self.group
        if not (self.group_active and g.size):
            return
        for r in self.decoding:
            if r.group_base is not None:
                g.sync(r)
                r.group_base = None
        self.group = DecodeGroup(self.kv)
        self.group_active = False
