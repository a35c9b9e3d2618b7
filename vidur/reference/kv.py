"""Executor-side KV cache state: per-request slots, slot-range allocation, and the KV views one
iteration's layers read and write (:class:`vidur.reference.layers.KV`). The views take the
executor (``ex``: a :class:`vidur.reference.executor.ReferenceExecutor`) and read its pools."""

from __future__ import annotations

PAGE = 256  # tokens per KV page (FlashAttention-2's paged KV needs a multiple of 256)


class SeqState:
    """Executor-side state of one request: its tokens and where its KV lives."""

    __slots__ = ("base", "cap", "ctx_exec", "pages", "tokens", "written")

    def __init__(self, tokens: list[int]):
        self.tokens = tokens  # prompt ids, then every generated id
        self.written = 0  # tokens whose KV is in the cache
        self.ctx_exec = 0  # the request's kv_len when it last ran (still so while that batch is in flight)
        self.pages: list[int] = []  # paged layout: page ids
        self.base = -1  # contiguous layout: first slot of the request's range
        self.cap = 0  # contiguous layout: slots in the range


class SlotRanges:
    """First-fit allocator of contiguous slot ranges in ``[0, size)``."""

    def __init__(self, size: int):
        self.size = size
        self.free: list[list[int]] = [[0, size]]  # sorted [start, length]

    def alloc(self, n: int) -> int:
        for i, (start, length) in enumerate(self.free):
            if length >= n:
                if length == n:
                    del self.free[i]
                else:
                    self.free[i] = [start + n, length - n]
                return start
        return -1

    def release(self, start: int, n: int) -> None:
        free = self.free
        i = 0
        while i < len(free) and free[i][0] < start:
            i += 1
        free.insert(i, [start, n])
        if i + 1 < len(free) and free[i][0] + free[i][1] == free[i + 1][0]:
            free[i][1] += free[i + 1][1]
            del free[i + 1]
        if i > 0 and free[i - 1][0] + free[i - 1][1] == free[i][0]:
            free[i - 1][1] += free[i][1]
            del free[i]


# --- the KV cache of one iteration, as the shared layer sees it (vidur.reference.layers.KV) ------------


class PagedKV:
    """Paged pool, FlashAttention varlen over the block table (one call for the decodes, one for the chunks)."""

    __slots__ = ("ex", "inp")

    def __init__(self, ex, inp: dict):
        self.ex, self.inp = ex, inp

    def write(self, li, k, v) -> None:
        ex, slots = self.ex, self.inp["slots"]
        ex.k_pool[li].view(-1, ex.kv_heads, ex.head_dim).index_copy_(0, slots, k)
        ex.v_pool[li].view(-1, ex.kv_heads, ex.head_dim).index_copy_(0, slots, v)

    def attend(self, li, q):
        ex = self.ex
        kp, vp = ex.k_pool[li], ex.v_pool[li]
        q = q.contiguous()
        outs = [
            ex._varlen(q[t0:t1], kp, vp, cu_q, cu_k, max_q, max_k, used, tab, causal)
            for t0, t1, cu_q, cu_k, used, tab, max_q, max_k, causal in self.inp["calls"]
        ]
        return outs[0] if len(outs) == 1 else ex.torch.cat(outs, 0)


class SlotKV:
    """A slot-range KV pool: each request owns a contiguous range of slots."""

    __slots__ = ("ex", "inp")

    def __init__(self, ex, inp: dict):
        self.ex, self.inp = ex, inp

    def write(self, li, k, v) -> None:
        ex, slots = self.ex, self.inp["slots"]
        ex.k_pool[li].index_copy_(0, slots, k)
        ex.v_pool[li].index_copy_(0, slots, v)


class FlashKV(SlotKV):
    """Slot-range pool, FlashAttention varlen with per-sequence start offsets (one call per group)."""

    __slots__ = ()

    def attend(self, li, q):
        ex = self.ex
        kp, vp = ex.k_pool[li], ex.v_pool[li]
        q = q.contiguous()
        outs = [
            ex._flash(q[t0:t1], kp, vp, cu_q, cu_k, max_q, max_k, used, causal)
            for t0, t1, cu_q, cu_k, used, _tab, max_q, max_k, causal in self.inp["calls"]
        ]
        return outs[0] if len(outs) == 1 else ex.torch.cat(outs, 0)


class SdpaKV(SlotKV):
    """Slot-range pool, one :func:`~vidur.reference.attention.sdpa_chunk` call per request (CPU)."""

    __slots__ = ()

    def attend(self, li, q):
        ex = self.ex
        kp, vp = ex.k_pool[li], ex.v_pool[li]
        scale, gqa, sdpa_chunk = ex.scale, ex.gqa, ex._attn.sdpa_chunk
        outs = []
        at = 0
        for _r, s, ql, ctx in self.inp["entries"]:
            b, kl = s.base, ctx + ql
            outs.append(sdpa_chunk(q[at : at + ql], kp[b : b + kl].transpose(0, 1), vp[b : b + kl].transpose(0, 1), ctx, scale, gqa))
            at += ql
        return outs[0] if len(outs) == 1 else ex.torch.cat(outs, 0)
