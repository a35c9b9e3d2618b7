"""Lazy progress for a replica's decoding requests.

Most iterations decode *every* decoding request once. Instead of touching
each request every iteration, the group keeps one step counter: member i
has ``kv_len = base_i + step``. Block growth is counted per residue class
(a member whose KV is block-aligned needs one more block before its next
token), completions come from a heap of finishing steps and inter-token
latencies are recorded once per step for all members that took the
previous one. Members' fields are brought up to date by :meth:`sync`.
"""

from __future__ import annotations

import heapq

import numpy as np

from vidur.entities.request import Request
from vidur.scheduler.kv import KVBlockManager


class DecodeGroup:
    """The decoding requests of one replica, advanced together."""

    __slots__ = (
        "kv", "bs", "step", "steps_done", "size", "base_sum", "residue",
        "finish", "last_end", "synced", "joiners", "tight",
    )

    def __init__(self, kv: KVBlockManager):
        self.kv = kv
        self.bs = kv.block_size
        self.step = 0  # decode steps taken by the group
        self.steps_done = 0  # group batches finished (join bookkeeping)
        self.size = 0
        self.base_sum = 0
        self.residue = [0] * self.bs  # tight members by base % block size
        self.finish: list[tuple[int, int, Request]] = []  # (finishing step, id, req)
        self.last_end = 0.0  # end time of the last group step
        self.synced = 0  # members whose last token came from the last group step
        self.joiners: list[Request] = []  # joined since the last group step
        self.tight = 0  # members whose KV grows block by block

    # -- membership --------------------------------------------------------
    def join(self, req: Request) -> bool:
        """``req`` finished a prefill and starts decoding (its fields are current).

        Members hold either KV for their whole life (reserved) or exactly the
        blocks their cached tokens fill; anything else returns False and the
        caller stops using the group."""
        bs = self.bs
        if req.blocks * bs >= req.final_kv:
            tight = 0  # KV reserved to the end: never grows
        elif req.blocks == -(-req.kv_len // bs):
            tight = 1
        else:
            return False
        base = req.kv_len - self.step
        req.group_base = base
        req.group_join = self.steps_done
        req.group_tight = tight
        self.size += 1
        self.base_sum += base
        if tight:
            self.tight += 1
            self.residue[base % bs] += 1
        heapq.heappush(self.finish, (req.final_kv - base, req.id, req))
        self.joiners.append(req)
        return True

    def sync(self, req: Request) -> None:
        """Bring one member's ``kv_len``, ``blocks`` and ``last_token`` up to date."""
        kv_len = req.group_base + self.step
        req.kv_len = kv_len
        if req.group_tight:
            req.blocks = -(-kv_len // self.bs)
        if req.group_join != self.steps_done:
            req.last_token = self.last_end

    def leave(self, req: Request) -> None:
        """Remove a member (synced first); its heap entry is dropped lazily."""
        self.sync(req)
        base = req.group_base
        self.size -= 1
        self.base_sum -= base
        if req.group_tight:
            self.tight -= 1
            self.residue[base % self.bs] -= 1
        if req.group_join == self.steps_done:
            self.joiners.remove(req)
        else:
            self.synced -= 1
        req.group_base = None

    def sync_all(self, members: list[Request]) -> None:
        for r in members:
            self.sync(r)

    # -- one group step -------------------------------------------------------
    def crossers(self, steps: int) -> int:
        """Blocks the members need before the next ``steps`` decode steps
        (a tight member needs one whenever its KV length is block-aligned)."""
        bs, s, res = self.bs, self.step, self.residue
        if steps == 1 and bs > 1:  # every event asks for the next step's
            return res[(-s) % bs]
        full, rest = divmod(steps, bs)
        total = full * self.tight
        for j in range(rest):
            total += res[(-(s + j)) % bs]
        return total

    def crossers_per_step(self, steps: int) -> np.ndarray:
        """Blocks needed before each of the next ``steps`` steps (index 0 = now)."""
        res = np.asarray(self.residue, dtype=np.int64)
        return res[(-(self.step + np.arange(steps))) % self.bs]

    def steps_to_first_finish(self) -> int:
        """Decode steps until the earliest member produces its last token."""
        heap = self.finish
        while heap[0][2].group_base is None or heap[0][0] != heap[0][2].final_kv - heap[0][2].group_base:
            heapq.heappop(heap)
        return heap[0][0] - self.step

    @property
    def decode_kv(self) -> int:
        """Σ (ctx + 1) over members for the step about to run."""
        return self.base_sum + self.size * (self.step + 1)

    def advance(self, steps: int, start: float, first_end: float, end: float, itl) -> list[Request]:
        """Apply ``steps`` group steps that ran from ``start`` (first ending at
        ``first_end``, last at ``end``); record ITLs; return finished members."""
        if self.synced:
            itl.values.append(first_end - self.last_end)
            itl.counts.append(self.synced)
        for r in self.joiners:
            itl.values.append(first_end - r.last_token)
            itl.counts.append(1)
        self.joiners.clear()
        self.step += steps
        self.steps_done += 1
        self.last_end = end
        self.synced = self.size
        heap, step = self.finish, self.step
        if not heap or heap[0][0] > step:
            return []  # nobody finishes (most steps)
        done = []
        last = None
        while heap and heap[0][0] <= step:
            fs, _, r = heapq.heappop(heap)
            if r.group_base is None or fs != r.final_kv - r.group_base or r is last:
                # stale entry of a member that left; or a copy of the live one, left by a member
                # that left and rejoined at the same base (no group step while it re-prefilled)
                continue
            last = r
            done.append(r)
        return done
