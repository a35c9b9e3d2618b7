"""Automatic prefix caching: KV blocks shared by content, kept after use, evicted LRU.

The model is vLLM's automatic prefix caching (vllm/v1/core/block_pool.py,
kv_cache_manager.py; docs.vllm.ai "Automatic Prefix Caching"):

- A *full* block is identified by its content and everything before it (vLLM
  hashes the parent block's hash with the block's tokens); the content key
  here is the same identity read off the request's prefix tree
  (:mod:`vidur.workload.content`). The partial last block is never shared.
- Blocks are reference-counted. A block whose last user finishes (or is
  preempted) stays cached and evictable; allocation takes never-cached free
  blocks first, then evicts the least recently freed cached block. A
  request's blocks are freed tail first, so its tail is evicted first.
- At admission a request takes the longest cached run of its full blocks,
  at most ``prefill_target - 1`` tokens (one token is always computed to
  produce logits): its ``kv_len`` starts there, so the prefill skips those
  tokens while attention still reads them as context. After a preemption
  by recompute the request looks up again and may hit its own blocks.
- Blocks become shareable when the tokens that fill them are computed: the
  engine calls :meth:`PrefixCachingKVManager.computed` after each prefill
  chunk; tokens produced while decoding are registered when the request
  finishes or is preempted (a follow-up turn arrives after completion).

Accounting: ``used`` counts blocks with at least one user; cached blocks
without users are free capacity (evictable), so ``can_allocate`` is
unchanged. Growth of decoding requests adds to ``used`` without calling the
manager; evictions that growth forces are carried out (in LRU order, hence
the same ones) at the manager's next call, before it looks at the cache.

Private units: a request without content (a unique prompt) that was never
preempted can only ever be looked up by itself, so its units are counted,
not registered, while it runs; when it finishes they enter the LRU list as
one segment (evicted unit by unit, tail first, as separate entries would
be), and when it is preempted they are registered one by one (it may hit
them when it is admitted again). Same cache, same evictions, O(1) per
request instead of O(units).

Token-granular managers (block size 1, LightLLM) share prefixes in units of
16 tokens, so that no per-token entries exist; block sizes of 16 or more
share whole blocks.
"""

from __future__ import annotations

from collections import OrderedDict

from vidur.entities.request import Request
from vidur.scheduler.kv import KVBlockManager
from vidur.workload.content import KEY_SPAN, request_path

MIN_UNIT_TOKENS = 16


class PrefixCachingKVManager(KVBlockManager):
    """A :class:`KVBlockManager` with a content-addressed, LRU-evicted block cache.

    ``tree_parent``/``tree_start`` are the run's prefix tree as lists (shared
    by every replica); requests without content are unique prompts.
    Counters: ``hit_tokens`` and ``query_tokens`` (prompt tokens found /
    looked up at first admissions), ``evicted_blocks``.
    """

    __slots__ = (
        "unit", "unit_blocks", "table", "lru", "lru_blocks", "tree_parent", "tree_start",
        "hit_tokens", "query_tokens", "evicted_blocks", "recompute_hit_tokens",
    )

    prefix_caching = True

    def __init__(self, num_blocks: int, block_size: int, tree_parent: list[int] | None = None,
                 tree_start: list[int] | None = None):
        super().__init__(num_blocks, block_size)
        self.unit_blocks = -(-MIN_UNIT_TOKENS // block_size)
        self.unit = self.unit_blocks * block_size  # tokens per shareable unit (a block, or 16 tokens)
        self.table: dict[int, list] = {}  # content key -> entry [users, key]
        self.lru: OrderedDict[int, list] = OrderedDict()  # cached entries without users, oldest first
        self.lru_blocks = 0
        self.tree_parent = tree_parent if tree_parent is not None else []
        self.tree_start = tree_start if tree_start is not None else []
        self.hit_tokens = 0
        self.query_tokens = 0
        self.evicted_blocks = 0
        self.recompute_hit_tokens = 0

    # -- content keys ---------------------------------------------------------
    def _state(self, req: Request) -> list:
        """``[starts, nodes, held, private]`` of ``req``: its token path, the
        cache entries (or None for unshared units) of its leading units, and
        the count of its computed private units (None unless the request has
        no content and was never preempted: see the module docstring)."""
        st = req.kvc
        if st is None:
            c = req.content
            if c is None:
                st = req.kvc = [[0], [-(req.id + 1)], [], 0 if req.preemptions == 0 else None]
            else:
                leaf, out, row = c[0], c[1], c[2]
                starts, nodes = request_path(self.tree_parent, self.tree_start, leaf, out, req.prompt, -(row + 1))
                st = req.kvc = [starts, nodes, [], None]
        return st

    @staticmethod
    def _keys(starts: list[int], nodes: list[int], unit: int, first: int, stop: int) -> list[int]:
        """Content keys of units ``first .. stop - 1``: unit u ends at token ``(u + 1) * unit`` and
        its key is ``node * KEY_SPAN + (end - start)`` of the path segment (node, start) holding
        that end (a segment holds the ends after its start, up to and including the next one's
        start). One ``range`` per segment crossed."""
        out: list[int] = []
        i = 0
        last = len(starts) - 1
        u = first
        while u < stop:
            end = (u + 1) * unit
            while i < last and starts[i + 1] < end:
                i += 1
            hi = min(stop, starts[i + 1] // unit) if i < last else stop  # units ending in this segment
            base = nodes[i] * KEY_SPAN - starts[i]
            out.extend(range(base + end, base + hi * unit + 1, unit))
            u = hi
        return out

    def _key_list(self, req: Request, st: list, stop: int) -> list[int]:
        """The content keys of ``req``'s units ``0 .. stop - 1`` (at least), computed once per request
        and kept in ``req.ckeys`` until it finishes: a waiting request is looked up by the router on
        every replica, then by ``can_admit`` and ``admit``, and the keys depend only on its token path
        (the run's prefix tree, shared by every replica) and the sharing unit."""
        memo = req.ckeys
        unit = self.unit
        if memo is None or memo[0] != unit:
            memo = req.ckeys = (unit, [])
        keys = memo[1]
        if len(keys) < stop:
            keys.extend(self._keys(st[0], st[1], unit, len(keys), stop))
        return keys

    def _match(self, req: Request) -> list[list]:
        """Cache entries of ``req``'s longest cached run of leading units."""
        st = self._state(req)
        limit = (req.prefill_target - 1) // self.unit
        if st[3] is not None or limit <= 0:  # a private request's units are never in the table
            return []
        keys = self._key_list(req, st, limit)
        get = self.table.get
        if get(keys[0]) is None:
            return []
        hits = list(map(get, keys[:limit]))  # every lookup in C, then cut at the first miss
        try:
            del hits[hits.index(None):]
        except ValueError:
            pass
        return hits

    def cached_prefix(self, req: Request) -> int:
        """Tokens of ``req``'s prompt this replica holds now (for routers; no side effects)."""
        self._trim()  # evictions that decode growth forced come first
        fresh = req.kvc is None
        hits = self._match(req)
        if fresh:
            req.kvc = None
        return len(hits) * self.unit

    def prefix_key(self, req: Request, tokens: int):
        """The content key of ``req``'s first ``tokens`` tokens (a multiple of the sharing unit):
        equal keys mean equal prefixes. None when ``tokens`` is not a whole number of units or
        the request holds fewer tokens. No side effects (for schedulers comparing waiting requests)."""
        units, rest = divmod(tokens, self.unit)
        if units < 1 or rest or req.prefill_target < tokens:
            return None
        fresh = req.kvc is None
        key = self._key_list(req, self._state(req), units)[units - 1]
        if fresh:
            req.kvc = None
        return key

    # -- eviction -------------------------------------------------------------
    def _trim(self) -> None:
        """Evict least recently used cached blocks until used + cached fit."""
        excess = self.used + self.lru_blocks - self.num_blocks
        if excess <= 0:
            return
        lru, table, ub = self.lru, self.table, self.unit_blocks
        while excess > 0:
            key, e = lru.popitem(last=False)
            if len(e) == 2:
                del table[key]
                n = ub
            else:  # a finished request's private units: evict as many as needed
                k = min(e[2], -(-excess // ub))
                e[2] -= k
                if e[2]:
                    lru[key] = e
                    lru.move_to_end(key, last=False)
                n = k * ub
            self.lru_blocks -= n
            self.evicted_blocks += n
            excess -= n

    # -- the KVBlockManager interface -------------------------------------------
    def can_admit(self, req: Request, num_blocks: int, reserve: int = 0) -> bool:
        self._trim()
        shared = 0
        for e in self._match(req):
            if e[0]:
                shared += 1
        return num_blocks - shared * self.unit_blocks + reserve <= self.num_blocks - self.used

    def admit(self, req: Request, num_blocks: int) -> None:
        """Reference ``req``'s cached prefix, allocate the rest of its
        ``num_blocks`` blocks and start its prefill after the cached tokens."""
        self._trim()
        hits = self._match(req)
        ub, lru = self.unit_blocks, self.lru
        for e in hits:
            if e[0] == 0:
                del lru[e[1]]
                self.lru_blocks -= ub
                self.used += ub
            e[0] += 1
        self.allocate(req, num_blocks - len(hits) * ub)
        req.blocks = num_blocks
        held = req.kvc[2]
        held.extend(hits)
        hit = len(hits) * self.unit
        req.kv_len = hit
        if req.preemptions == 0:
            req.cached = hit
            self.hit_tokens += hit
            self.query_tokens += req.prompt
        else:
            self.recompute_hit_tokens += hit
        self._trim()

    def computed(self, req: Request) -> None:
        """Register ``req``'s newly filled units (its ``kv_len`` tokens are computed)."""
        st = req.kvc if req.kvc is not None else self._state(req)
        full = req.kv_len // self.unit
        if st[3] is not None:  # private units: counted, not registered
            if full > st[3]:
                self._trim()
                st[3] = full
            return
        held = st[2]
        first = len(held)
        if full <= first:
            return
        self._trim()  # evictions that decode growth forced come first (same state stepped or lazy)
        table, lru, ub = self.table, self.lru, self.unit_blocks
        for key in self._key_list(req, st, full)[first:full]:
            e = table.get(key)
            if e is None:
                e = table[key] = [1, key]
                held.append(e)
            elif e[0] == 0:
                # cached without users: this request's freshly computed copy takes the
                # entry over (the old copy was free capacity), so the content stays cached
                del lru[key]
                self.lru_blocks -= ub
                e[0] = 1
                held.append(e)
            else:
                held.append(None)  # another running request holds the same content

    def free_request(self, req: Request) -> None:
        """Release ``req``'s blocks: its full computed units stay cached, the rest is freed."""
        self._trim()
        self.computed(req)
        st = req.kvc
        ub, lru = self.unit_blocks, self.lru
        n = st[3]
        if n is not None:
            if n:
                if req.finished:  # never looked up again: one LRU segment
                    key = ("private", req.id)
                    lru[key] = [0, key, n]
                else:  # preempted: it may hit its own units when admitted again
                    table = self.table
                    for key in reversed(self._key_list(req, st, n)[:n]):
                        table[key] = lru[key] = [0, key]
                self.lru_blocks += n * ub
            self.used -= req.blocks
            req.blocks = 0
            req.kvc = None
            if req.finished:
                req.ckeys = None
            return
        held = st[2]
        entries = 0
        released = 0
        for e in reversed(held):  # tail first: evicted first
            if e is None:
                continue
            entries += 1
            e[0] -= 1
            if e[0] == 0:
                lru[e[1]] = e
                released += 1
        self.lru_blocks += released * ub
        self.used -= req.blocks - entries * ub + released * ub
        req.blocks = 0
        req.kvc = None
        if req.finished:
            req.ckeys = None

    @property
    def cached_blocks(self) -> int:
        """Blocks holding cached content that no request uses (evictable)."""
        return self.lru_blocks

    # -- checks (tests) -------------------------------------------------------
    def shared_excess(self) -> int:
        """Σ over cached entries of (users - 1) x blocks: what summing every
        request's ``blocks`` counts more than once."""
        return sum((e[0] - 1) * self.unit_blocks for e in self.table.values() if e[0] > 1)

    def audit(self, requests) -> str | None:
        """What is wrong with the cache given the requests holding blocks
        (their ``kvc``), or None: every entry's user count equals the requests
        referencing it (so no block is freed while referenced), entries without
        users are exactly the LRU ones, and used + cached fit the capacity."""
        refs: dict[int, int] = {}
        private = 0
        for r in requests:
            if r.kvc is None:
                continue
            if r.kvc[3] is not None:
                private += r.kvc[3]
            for e in r.kvc[2]:
                if e is not None:
                    refs[id(e)] = refs.get(id(e), 0) + 1
                    if self.table.get(e[1]) is not e:
                        return f"request {r.id} holds block {e[1]} that is no longer in the cache"
        for key, e in self.table.items():
            n = refs.get(id(e), 0)
            if e[0] != n:
                return f"block {key} counts {e[0]} users but {n} requests hold it"
            if (e[0] == 0) != (key in self.lru):
                return f"block {key} with {e[0]} users is {'not ' if e[0] == 0 else ''}in the LRU list"
        units = sum(1 if len(e) == 2 else e[2] for e in self.lru.values())
        if units * self.unit_blocks != self.lru_blocks:
            return f"LRU holds {units} units but counts {self.lru_blocks} blocks"
        if private * self.unit_blocks > self.used:
            return f"running requests hold {private} private units but only {self.used} blocks are used"
        self._trim()
        if self.used + self.lru_blocks > self.num_blocks:
            return f"{self.used} used + {self.lru_blocks} cached blocks exceed the capacity {self.num_blocks}"
        return None


def caching_enabled(sched_cls, config) -> bool:
    """Prefix caching for this policy and config: the config's ``prefix_caching``
    if set, else the policy's ``prefix_caching_default``."""
    on = getattr(config, "prefix_caching", None)
    return bool(getattr(sched_cls, "prefix_caching_default", False) if on is None else on)


def make_kv_manager(caching: bool, num_blocks: int, block_size: int, tree=None) -> KVBlockManager:
    """The KV block manager of one replica: with a prefix cache over ``tree``
    (a :class:`~vidur.workload.content.PrefixTree` or ``(parent, start)``
    lists) when ``caching``, else the plain counter."""
    if not caching:
        return KVBlockManager(num_blocks, block_size)
    if tree is None:
        return PrefixCachingKVManager(num_blocks, block_size)
    if not isinstance(tree, tuple):
        tree = (tree.parent.tolist(), tree.start.tolist())
    return PrefixCachingKVManager(num_blocks, block_size, *tree)
