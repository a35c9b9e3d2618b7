"""Attention kernels over a KV cache: one implementation for the reference executor and the profiler.

Three kernels, tried in this order on CUDA by both sides (so that on one
machine the profile measures the kernel ``vidur validate`` runs):

- ``paged``: FlashAttention varlen over a block table
  (``torch.nn.attention.varlen.varlen_attn``, torch 2.12+), :func:`paged_varlen`;
- ``flash``: FlashAttention varlen over contiguous per-sequence slot ranges
  (``aten._flash_attention_forward`` with start offsets and ``seqused_k``),
  :func:`flash_varlen`;
- ``sdpa``: one ``scaled_dot_product_attention`` per request, :func:`sdpa_chunk`
  (the CPU kernel, and the CUDA fallback).

Each CUDA kernel is checked against SDPA before use (:func:`check_paged`,
:func:`check_flash`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from vidur.reference.kv import PAGE

if TYPE_CHECKING:
    from vidur.reference.shapes import ShardShape


#: kernel names in the order they are tried on CUDA
KERNELS = ("paged", "flash", "sdpa")

#: attention backend names recorded by earlier profiles -> the kernel they ran
LEGACY_NAMES = {"varlen_paged": "paged", "varlen": "flash"}


def kernel_name(recorded: str | None) -> str | None:
    """The kernel a profile's ``attention_backend`` entry names (older names mapped; CPU notes → sdpa)."""
    if recorded is None:
        return None
    name = LEGACY_NAMES.get(recorded, recorded)
    if name not in KERNELS and name.startswith("sdpa"):
        return "sdpa"
    return name


def sdpa_chunk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: int, scale: float, gqa: bool) -> torch.Tensor:
    """Attention of one request's new tokens: q [ql, Hq, D]; k, v [Hkv, ctx+ql, D] -> [ql, Hq, D].

    Causal, aligned to the end (query i sees keys up to ``ctx + i``). The
    executor's SDPA path calls this once per request of an iteration.
    """
    ql = q.shape[0]
    qq = q.transpose(0, 1).unsqueeze(0)
    kk, vv = k.unsqueeze(0), v.unsqueeze(0)
    if ql == 1:
        out = F.scaled_dot_product_attention(qq, kk, vv, scale=scale, enable_gqa=gqa)
    elif ctx == 0:
        out = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale, enable_gqa=gqa)
    elif q.device.type == "cpu":
        from torch.nn.attention.bias import causal_lower_right

        mask = causal_lower_right(ql, ctx + ql)
        out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=scale, enable_gqa=gqa)
    else:  # an explicit boolean mask: every CUDA backend takes it together with GQA
        mask = torch.ones(ql, ctx + ql, dtype=torch.bool, device=q.device).tril(diagonal=ctx)
        out = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=scale, enable_gqa=gqa)
    return out[0].transpose(0, 1)


def flash_varlen(q, k_pool, v_pool, cu_q, starts, max_q: int, max_k: int, seqused, causal: bool, scale: float):
    """FlashAttention varlen over a token-slot pool: sequence i reads ``seqused[i]`` keys from ``starts[i]``.

    q [total_q, Hq, D]; pools [slots, Hkv, D]; ``cu_q`` the packed query
    offsets; ``starts`` each sequence's first slot (one more entry, unused).
    """
    out = torch.ops.aten._flash_attention_forward(
        q, k_pool, v_pool, cu_q, starts, max_q, max_k, 0.0, causal, False, scale=scale, seqused_k=seqused
    )
    return out[0]


def paged_varlen(q, k_pages, v_pages, cu_q, cu_k, max_q: int, max_k: int, seqused, table, causal: bool, scale: float, gqa: bool):
    """FlashAttention varlen over a paged cache: pages [n, PAGE, Hkv, D], ``table`` [seqs, pages]."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(
        q, k_pages, v_pages, cu_q, cu_k, max_q, max_k,
        scale=scale,
        window_size=(-1, 0) if causal else (-1, -1),
        enable_gqa=gqa,
        seqused_k=seqused,
        block_table=table,
    )


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a.float(), b.float(), atol=3e-2, rtol=3e-2))


def check_flash(q_heads: int, kv_heads: int, head_dim: int, device, dtype, scale: float) -> str | None:
    """None when :func:`flash_varlen` agrees with SDPA here (two sequences, out of order), else why not."""
    if torch.device(device).type != "cuda":
        return "it needs CUDA"
    gqa = q_heads != kv_heads
    try:
        gen = torch.Generator(device=device)
        gen.manual_seed(2)
        lens = [(40, 300), (1, 77)]  # (new tokens, cached context) of two sequences
        starts = [500, 20]  # out of order, with gaps: as slot ranges are
        kp = torch.randn(1000, kv_heads, head_dim, device=device, dtype=dtype, generator=gen)
        vp = torch.randn_like(kp)
        total_q = sum(q for q, _ in lens)
        q = torch.randn(total_q, q_heads, head_dim, device=device, dtype=dtype, generator=gen)
        refs, at = [], 0
        for (ql, ctx), st in zip(lens, starts):
            kl = ctx + ql
            refs.append(sdpa_chunk(q[at : at + ql], kp[st : st + kl].transpose(0, 1), vp[st : st + kl].transpose(0, 1), ctx, scale, gqa))
            at += ql
        ref = torch.cat(refs, 0)
        cu_q = torch.tensor([0, 40, 41], device=device, dtype=torch.int32)
        st = torch.tensor(starts + [0], device=device, dtype=torch.int32)
        used = torch.tensor([340, 78], device=device, dtype=torch.int32)
        out = torch.cat([
            flash_varlen(q[:40], kp, vp, cu_q[:2], st[[0, 2]], 40, 340, used[:1], True, scale),
            flash_varlen(q[40:], kp, vp, cu_q[:2], st[[1, 2]], 1, 78, used[1:], False, scale),
        ], 0)
        both = flash_varlen(q, kp, vp, cu_q, st, 40, 340, used, True, scale)
        torch.cuda.synchronize(device)
        if _close(out, ref) and _close(both, ref):
            return None
        return "FlashAttention varlen with start offsets disagrees with SDPA"
    except Exception as exc:  # noqa: BLE001 - any failure means: not this kernel
        return f"{type(exc).__name__}: {exc}"[:300]


def check_paged(q_heads: int, kv_heads: int, head_dim: int, device, dtype, scale: float) -> tuple[str | None, bool]:
    """(None, with_cu_k) when :func:`paged_varlen` agrees with SDPA on one chunk after cached context,
    else (why not, True). ``with_cu_k``: whether this torch wants ``cu_seq_k`` along with the block table."""
    if torch.device(device).type != "cuda":
        return "it needs CUDA", True
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen", True
    gqa = q_heads != kv_heads
    try:
        gen = torch.Generator(device=device)
        gen.manual_seed(1)
        ctx, ql = 300, 40
        kl = ctx + ql
        q = torch.randn(ql, q_heads, head_dim, device=device, dtype=dtype, generator=gen)
        k = torch.randn(kl, kv_heads, head_dim, device=device, dtype=dtype, generator=gen)
        v = torch.randn(kl, kv_heads, head_dim, device=device, dtype=dtype, generator=gen)
        pages = -(-kl // PAGE)
        kp = torch.zeros(pages + 1, PAGE, kv_heads, head_dim, device=device, dtype=dtype)
        vp = torch.zeros_like(kp)
        order = list(range(pages, 0, -1))  # scattered, non-identity page order
        table = torch.tensor([order], device=device, dtype=torch.int32)
        for i, p in enumerate(order):
            lo, hi = i * PAGE, min(kl, (i + 1) * PAGE)
            kp[p, : hi - lo] = k[lo:hi]
            vp[p, : hi - lo] = v[lo:hi]
        cu_q = torch.tensor([0, ql], device=device, dtype=torch.int32)
        cu_k = torch.tensor([0, kl], device=device, dtype=torch.int32)
        used = torch.tensor([kl], device=device, dtype=torch.int32)
        ref = sdpa_chunk(q, k.transpose(0, 1), v.transpose(0, 1), ctx, scale, gqa)
    except Exception as exc:  # noqa: BLE001 - any failure means: not this kernel
        return f"reference attention failed: {type(exc).__name__}: {exc}"[:300], True
    error = "varlen_attn with a block table disagrees with SDPA"
    for with_cu_k in (True, False):  # some versions want cu_seq_k=None with a block table
        try:
            out = paged_varlen(q, kp, vp, cu_q, cu_k if with_cu_k else None, ql, kl, used, table, True, scale, gqa)
            torch.cuda.synchronize(device)
            if _close(out, ref):
                return None, with_cu_k
            error = "varlen_attn with a block table disagrees with SDPA"
        except Exception as exc:  # noqa: BLE001 - try the other form, then give up
            error = f"{type(exc).__name__}: {exc}"[:300]
    return error, True


def cumsum(xs):
    """Running totals of ``xs`` (a generator)."""
    t = 0
    for x in xs:
        t += x
        yield t


class Attention:
    """The profiler's attention: the executor's kernel (:data:`KERNELS`, first that works) on inputs laid
    out as the executor lays them out (pages in scattered order; slot ranges; per-request SDPA)."""

    def __init__(self, shape: "ShardShape", device: torch.device, dtype: torch.dtype, backend: str | None = None):
        self.shape = shape
        self.device = device
        self.dtype = dtype
        self.scale = 1.0 / math.sqrt(shape.head_dim)
        self.gqa = shape.q_heads != shape.kv_heads
        self.backend = backend or "sdpa"
        self.paged_cu_k = True
        #: why a kernel was passed over, by kernel name
        self.errors: dict[str, str] = {}

    def select_backend(self) -> str:
        """Check every CUDA kernel against SDPA; keep the first that works, as the executor does."""
        self.errors = {}
        if self.device.type != "cuda":
            self.backend = "sdpa"
            return self.backend
        s = self.shape
        paged, self.paged_cu_k = check_paged(s.q_heads, s.kv_heads, s.head_dim, self.device, self.dtype, self.scale)
        flash = check_flash(s.q_heads, s.kv_heads, s.head_dim, self.device, self.dtype, self.scale)
        for name, err in (("paged", paged), ("flash", flash)):
            if err is not None:
                self.errors[name] = err
        self.backend = "paged" if paged is None else "flash" if flash is None else "sdpa"
        return self.backend

    def build(self, q_lens: list[int], ctxs: list[int], causal: bool) -> Callable[[], object]:
        """A closure running attention for requests with ``q_lens[i]`` new tokens after ``ctxs[i]`` cached.

        Inputs are random; the KV cache holds ``ctx + q`` tokens per request.
        As in the executor, the kernel runs causal only when a request has
        more than one new token.
        """
        s = self.shape
        dev, dt = self.device, self.dtype
        n = len(q_lens)
        kv_lens = [c + q for q, c in zip(q_lens, ctxs)]
        total_q, total_k = sum(q_lens), sum(kv_lens)
        max_q, max_k = max(q_lens), max(kv_lens)
        causal = causal and max_q > 1
        q = torch.randn(total_q, s.q_heads, s.head_dim, device=dev, dtype=dt)
        if self.backend == "sdpa":  # the executor's SDPA path: one call per request over a slot pool
            kp = torch.randn(total_k, s.kv_heads, s.head_dim, device=dev, dtype=dt)
            vp = torch.randn_like(kp)
            parts = list(zip([0, *cumsum(q_lens)], q_lens, [0, *cumsum(kv_lens)], kv_lens, ctxs))
            scale, gqa = self.scale, self.gqa

            def run():
                outs = [
                    sdpa_chunk(q[aq : aq + ql], kp[ak : ak + kl].transpose(0, 1), vp[ak : ak + kl].transpose(0, 1), c, scale, gqa)
                    for aq, ql, ak, kl, c in parts
                ]
                return outs[0] if len(outs) == 1 else torch.cat(outs, 0)

            return run
        cu_q = torch.tensor([0, *cumsum(q_lens)], device=dev, dtype=torch.int32)
        used = torch.tensor(kv_lens, device=dev, dtype=torch.int32)
        if self.backend == "paged":
            pages = [math.ceil(kl / PAGE) for kl in kv_lens]
            num_pages = sum(pages)
            kc = torch.randn(num_pages, PAGE, s.kv_heads, s.head_dim, device=dev, dtype=dt)
            vc = torch.randn_like(kc)
            perm = torch.randperm(num_pages).tolist()  # scattered pages, as in a real cache
            table = torch.zeros(n, max(pages), dtype=torch.int32)
            at = 0
            for i, p in enumerate(pages):
                table[i, :p] = torch.tensor(perm[at : at + p], dtype=torch.int32)
                at += p
            table = table.to(dev)
            cu_k = torch.tensor([0, *cumsum(kv_lens)], device=dev, dtype=torch.int32) if self.paged_cu_k else None
            scale, gqa = self.scale, self.gqa
            return lambda: paged_varlen(q, kc, vc, cu_q, cu_k, max_q, max_k, used, table, causal, scale, gqa)
        if self.backend != "flash":
            raise ValueError(f"unknown attention kernel {self.backend!r}")
        # slot ranges: request i reads kv_lens[i] slots from starts[i] (the extra last entry is unused)
        kp = torch.randn(total_k, s.kv_heads, s.head_dim, device=dev, dtype=dt)
        vp = torch.randn_like(kp)
        starts = torch.tensor([0, *cumsum(kv_lens)], device=dev, dtype=torch.int32)
        starts[-1] = 0
        scale = self.scale
        return lambda: flash_varlen(q, kp, vp, cu_q, starts, max_q, max_k, used, causal, scale)
