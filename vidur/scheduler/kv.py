"""Paged KV-cache block accounting for one replica."""

from __future__ import annotations

from vidur.entities.request import Request
from vidur.errors import VidurError


class KVBlockManager:
    """Counts KV blocks per request; never hands out more than ``num_blocks``.

    ``block_size`` tokens per block. Requests record how many blocks they
    hold in ``Request.blocks``; the manager keeps the total. Policies admit
    a request with :meth:`can_admit` and :meth:`admit` (through
    ``ReplicaScheduler.admit``), so that a manager with a prefix cache
    (:class:`~vidur.scheduler.prefix_cache.PrefixCachingKVManager`) can
    hand it the cached blocks of its prefix.
    """

    __slots__ = ("num_blocks", "block_size", "used")

    #: True for managers that share cached prefixes between requests
    prefix_caching = False

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise VidurError(f"KV cache needs >= 1 block of >= 1 token, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.used = 0

    @property
    def free(self) -> int:
        return self.num_blocks - self.used

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` tokens of KV."""
        return -(-num_tokens // self.block_size)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_blocks - self.used

    def can_admit(self, req: Request, num_blocks: int, reserve: int = 0) -> bool:
        """True if ``req`` can be admitted holding ``num_blocks`` blocks with
        ``reserve`` more blocks left free (a watermark)."""
        return num_blocks + reserve <= self.num_blocks - self.used

    def admit(self, req: Request, num_blocks: int) -> None:
        """Give a newly admitted ``req`` its ``num_blocks`` blocks (caller checked :meth:`can_admit`)."""
        self.allocate(req, num_blocks)

    def allocate(self, req: Request, num_blocks: int) -> None:
        """Give ``req`` ``num_blocks`` more blocks (caller checked can_allocate)."""
        if num_blocks > self.num_blocks - self.used:
            raise RuntimeError(f"KV over-allocation: {num_blocks} requested, {self.free} free")
        self.used += num_blocks
        req.blocks += num_blocks

    def ensure(self, req: Request, num_tokens: int) -> bool:
        """Grow ``req``'s blocks to hold ``num_tokens``; False (and no change) if they don't fit."""
        need = -(-num_tokens // self.block_size) - req.blocks
        if need <= 0:
            return True
        if need > self.num_blocks - self.used:
            return False
        self.used += need
        req.blocks += need
        return True

    def free_request(self, req: Request) -> None:
        """Release all of ``req``'s blocks."""
        self.used -= req.blocks
        req.blocks = 0
