"""Measurement grids: which sizes the profiler visits.

The grids were sized on the A100/A40/H100 measurements of the original
Vidur (``vidur-profiles/compute``): interpolating token-level operators from
:func:`token_grid` (every 8 tokens to 64, every 16 to 128, then steps of
1/8 of the value rounded down to a power of two) leaves ~2.6 % mean error
on the points in between, and ~2 % with a 20 % hold-out. Attention
contexts step by √2 so that a held-out point still has neighbours at most
a factor 2 apart. Decode contexts step by 2^(1/4) on GPUs: decode kernels'
times jump where the KV length crosses a power of two (tile and split
heuristics; on an H200, SDPA decode at 16 and 23 cached tokens takes the
same time, at 32 one step more), and a √2 grid cannot place those steps.
"""

from __future__ import annotations

import math

import attrs


def token_grid(max_tokens: int, step_frac: float = 1 / 8) -> list[int]:
    """Token counts from 1 to ``max_tokens`` (included)."""
    g = {1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128}
    x = 128
    while x < max_tokens:
        step = max(16, 2 ** int(math.floor(math.log2(x * step_frac))))
        x += step
        g.add(min(x, max_tokens))
    g.add(max_tokens)
    return sorted(v for v in g if v <= max_tokens)


def geometric(lo: int, hi: int, ratio: float = math.sqrt(2), multiple: int = 1) -> list[int]:
    """Integers from ``lo`` to ``hi`` (both included) spaced by ``ratio``, rounded to ``multiple``."""
    out = set()
    x = float(lo)
    while x < hi:
        v = int(round(x / multiple) * multiple) if x >= multiple else int(round(x))
        out.add(max(lo, v))
        x *= ratio
    out.add(hi)
    return sorted(out)


@attrs.frozen
class Grid:
    """What to measure. ``max_kv_tokens`` caps batch × context for decode (memory)."""

    max_tokens: int = 16384
    prefill_chunks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
    context_ratio: float = math.sqrt(2)
    decode_context_ratio: float | None = 2**0.25  # None: ``context_ratio``
    min_context: int = 16
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    max_kv_tokens: int = 1 << 20
    prefill_batches: tuple[int, ...] = (2, 4, 8, 16, 32)
    prefill_batch_chunks: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    cpu_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    token_step: float = 1 / 8
    dense_tokens: int = 0  # also every token count up to this one (CPU GEMM times are not monotone in the rows)

    def tokens(self) -> list[int]:
        toks = set(token_grid(self.max_tokens, self.token_step))
        toks.update(range(1, min(self.dense_tokens, self.max_tokens) + 1))
        return sorted(toks)

    def contexts(self, hi: int) -> list[int]:
        """Cached-context lengths from 0 to ``hi``."""
        if hi <= 0:
            return [0]
        if hi <= self.min_context:
            return [0, hi]
        return [0] + geometric(self.min_context, hi, self.context_ratio)

    def prefill_points(self, max_pos: int) -> list[tuple[int, int, int]]:
        """(batch, chunk, context): single-request rows over the context, then batched chunks at context 0."""
        pts = []
        for q in self.prefill_chunks:
            if q > max_pos:
                continue
            for c in self.contexts(max_pos - q):
                pts.append((1, q, c))
        for b in self.prefill_batches:
            for q in self.prefill_batch_chunks:
                if q <= max_pos and b * q <= self.max_tokens:
                    pts.append((b, q, 0))
        return pts

    def decode_points(self, max_pos: int) -> list[tuple[int, int]]:
        """(batch, context) with batch × (context + 1) ≤ ``max_kv_tokens``."""
        pts = []
        ratio = self.decode_context_ratio or self.context_ratio
        for b in self.decode_batches:
            for c in geometric(self.min_context, max_pos - 1, ratio):
                if b * (c + 1) <= self.max_kv_tokens:
                    pts.append((b, c))
        return pts


#: GPU default: 1..16384 tokens, attention up to the model's maximum context
FULL = Grid()

#: CPU default (tiny models): a coarser, shorter grid (every token count to 64: a CPU GEMM of 3 rows
#: can take longer than one of 8), decode batches by powers of 2
CPU = Grid(
    max_tokens=4096,
    prefill_chunks=(1, 4, 16, 32, 64, 128, 256, 1024, 2048, 4096),
    context_ratio=2.0,
    decode_context_ratio=None,
    decode_batches=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    max_kv_tokens=1 << 17,
    prefill_batches=(4, 16),
    prefill_batch_chunks=(16, 256),
    cpu_batches=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    token_step=1 / 4,
    dense_tokens=64,
)

#: for tests: a handful of points per operator
TEST = Grid(
    max_tokens=256,
    prefill_chunks=(1, 16, 64),
    context_ratio=4.0,
    decode_context_ratio=None,
    decode_batches=(1, 8),
    max_kv_tokens=1 << 12,
    prefill_batches=(4,),
    prefill_batch_chunks=(16,),
    cpu_batches=(1, 8),
    token_step=1 / 2,
)

PRESETS = {"full": FULL, "cpu": CPU, "test": TEST}
