"""PyTorch operators of one decoder layer, sharded for tensor parallelism.

The profiler times these functions one by one; a reference executor can
run a whole layer with :meth:`LayerShard.forward`, so what is profiled is
what is executed. Tensor parallelism ``t`` is emulated on one device by
sharding the weight and head dimensions (Megatron style: QKV and gate/up
column-parallel, output and down projections row-parallel, vocabulary-
parallel embedding and LM head); the all-reduces are priced separately by
the collective model.

Attention: on CUDA, ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention)
over a paged KV cache when the installed torch supports it, else over
packed contiguous KV, else ``scaled_dot_product_attention``; on CPU,
``scaled_dot_product_attention`` (causal, lower-right aligned for chunks
after cached context). :attr:`LayerShard.attention_backend` says which.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from vidur.model.spec import ModelSpec

PAGE = 256  # KV page size (FlashAttention-2's paged KV needs a multiple of 256)
Fn = Callable[[], object]


class ShardShape:
    """Per-rank sizes of one layer at tensor parallelism ``tp``."""

    def __init__(self, model: ModelSpec, tp: int):
        self.model = model
        self.tp = tp
        self.hidden = model.hidden_size
        self.q_heads = max(1, model.num_heads // tp)
        self.kv_heads = max(1, model.num_kv_heads // tp)
        self.head_dim = model.head_dim
        self.inter = max(1, model.intermediate_size // tp)
        self.vocab = max(1, math.ceil(model.vocab_size / tp))
        self.rot_dim = int(model.head_dim * model.partial_rotary_factor) // 2 * 2

    @property
    def qkv_out(self) -> int:
        return (self.q_heads + 2 * self.kv_heads) * self.head_dim


def _norm(model: ModelSpec, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if model.norm == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)
    return F.rms_norm(x, (x.shape[-1],), w, 1e-5)


def _act(model: ModelSpec, x: torch.Tensor, inter: int) -> torch.Tensor:
    if model.gated_mlp:
        return F.silu(x[:, :inter]) * x[:, inter:]
    if "gelu" in model.activation:
        return F.gelu(x, approximate="tanh" if "new" in model.activation or "tanh" in model.activation else "none")
    return F.silu(x)


def rope_cache(shape: ShardShape, max_pos: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    half = max(1, shape.rot_dim // 2)
    inv = 1.0 / (shape.model.rope_theta ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    t = torch.arange(max_pos, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rope(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor, cos_c: torch.Tensor, sin_c: torch.Tensor, rot: int):
    """Rotary embedding (rotate-half, Llama/NeoX style) of the first ``rot`` dims of each head, in place."""
    cos = cos_c[pos].unsqueeze(1)
    sin = sin_c[pos].unsqueeze(1)
    half = rot // 2
    for x in (q, k):
        x1 = x[..., :half]
        x2 = x[..., half:rot]
        r1 = x1 * cos - x2 * sin
        r2 = x2 * cos + x1 * sin
        x[..., :half] = r1
        x[..., half:rot] = r2
    return q, k


class Attention:
    """Attention over a paged (CUDA) or contiguous (CPU) KV cache, with a backend chosen at first use."""

    def __init__(self, shape: ShardShape, device: torch.device, dtype: torch.dtype, backend: str | None = None):
        self.shape = shape
        self.device = device
        self.dtype = dtype
        self.scale = 1.0 / math.sqrt(shape.head_dim)
        self.backend = backend or ("varlen_paged" if device.type == "cuda" else "sdpa")

    # -- backends ---------------------------------------------------------
    def _varlen(self, q, k, v, cu_q, cu_k, max_q, max_k, causal, seqused_k=None, block_table=None):
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(
            q,
            k,
            v,
            cu_q,
            cu_k,
            max_q,
            max_k,
            scale=self.scale,
            window_size=(-1, 0) if causal else (-1, -1),
            enable_gqa=self.shape.q_heads != self.shape.kv_heads,
            seqused_k=seqused_k,
            block_table=block_table,
        )

    def _sdpa(self, q, k, v, causal: bool):
        """q: [B, H, Lq, D]; k, v: [B, Hkv, Lk, D]."""
        lq, lk = q.shape[2], k.shape[2]
        gqa = self.shape.q_heads != self.shape.kv_heads
        if causal and lq > 1:
            if lq == lk:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=gqa)
            # causal, aligned to the bottom right: query i sees keys up to i + (lk - lq)
            mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, scale=self.scale, enable_gqa=gqa)

    # -- builders used by the profiler --------------------------------------
    def build(self, q_lens: list[int], ctxs: list[int], causal: bool) -> Fn:
        """A closure running attention for requests with ``q_lens[i]`` new tokens after ``ctxs[i]`` cached.

        Inputs are random; the KV cache holds ``ctx + q`` tokens per request.
        """
        s = self.shape
        dev, dt = self.device, self.dtype
        n = len(q_lens)
        kv_lens = [c + q for q, c in zip(q_lens, ctxs)]
        total_q = sum(q_lens)
        if self.backend == "sdpa":
            if len(set(q_lens)) == 1 and len(set(kv_lens)) == 1:
                q = torch.randn(n, s.q_heads, q_lens[0], s.head_dim, device=dev, dtype=dt)
                k = torch.randn(n, s.kv_heads, kv_lens[0], s.head_dim, device=dev, dtype=dt)
                v = torch.randn_like(k)
                return lambda: self._sdpa(q, k, v, causal)
            parts = []
            for ql, kl in zip(q_lens, kv_lens):
                q = torch.randn(1, s.q_heads, ql, s.head_dim, device=dev, dtype=dt)
                k = torch.randn(1, s.kv_heads, kl, s.head_dim, device=dev, dtype=dt)
                parts.append((q, k, torch.randn_like(k)))
            return lambda: [self._sdpa(q, k, v, causal) for q, k, v in parts]
        q = torch.randn(total_q, s.q_heads, s.head_dim, device=dev, dtype=dt)
        cu_q = torch.tensor([0] + list(_cumsum(q_lens)), device=dev, dtype=torch.int32)
        cu_k = torch.tensor([0] + list(_cumsum(kv_lens)), device=dev, dtype=torch.int32)
        max_q, max_k = max(q_lens), max(kv_lens)
        if self.backend == "varlen_paged":
            pages = [math.ceil(kl / PAGE) for kl in kv_lens]
            num_pages = sum(pages)
            kc = torch.randn(num_pages, PAGE, s.kv_heads, s.head_dim, device=dev, dtype=dt)
            vc = torch.randn_like(kc)
            perm = torch.randperm(num_pages).tolist()  # scattered pages, as in a real cache
            width = max(pages)
            table = torch.zeros(n, width, dtype=torch.int32)
            at = 0
            for i, p in enumerate(pages):
                table[i, :p] = torch.tensor(perm[at : at + p], dtype=torch.int32)
                at += p
            table = table.to(dev)
            used = torch.tensor(kv_lens, device=dev, dtype=torch.int32)
            return lambda: self._varlen(q, kc, vc, cu_q, cu_k, max_q, max_k, causal, used, table)
        # packed contiguous KV
        k = torch.randn(sum(kv_lens), s.kv_heads, s.head_dim, device=dev, dtype=dt)
        v = torch.randn_like(k)
        return lambda: self._varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal)

    def select_backend(self) -> str:
        """Try the backends in order on a small problem (checked against SDPA); keep the first that works."""
        if self.device.type != "cuda":
            self.backend = "sdpa"
            return self.backend
        for cand in ("varlen_paged", "varlen", "sdpa"):
            self.backend = cand
            try:
                if cand != "sdpa" and not self._agrees_with_sdpa():
                    continue
                self.build([64], [64], True)()
                self.build([1, 1], [300, 300], False)()
                torch.cuda.synchronize(self.device)
                return cand
            except Exception:  # noqa: BLE001 - any failure: try the next backend
                continue
        self.backend = "sdpa"
        return self.backend

    def _agrees_with_sdpa(self) -> bool:
        """Numerical check of the varlen path against SDPA for one chunk after cached context."""
        s = self.shape
        torch.manual_seed(0)
        ql, ctx = 32, 288
        kl = ql + ctx
        q = torch.randn(ql, s.q_heads, s.head_dim, device=self.device, dtype=self.dtype)
        k = torch.randn(kl, s.kv_heads, s.head_dim, device=self.device, dtype=self.dtype)
        v = torch.randn_like(k)
        cu_q = torch.tensor([0, ql], device=self.device, dtype=torch.int32)
        cu_k = torch.tensor([0, kl], device=self.device, dtype=torch.int32)
        if self.backend == "varlen_paged":
            pages = math.ceil(kl / PAGE)
            kc = torch.zeros(pages, PAGE, s.kv_heads, s.head_dim, device=self.device, dtype=self.dtype)
            vc = torch.zeros_like(kc)
            kc.view(-1, s.kv_heads, s.head_dim)[:kl] = k
            vc.view(-1, s.kv_heads, s.head_dim)[:kl] = v
            table = torch.arange(pages, device=self.device, dtype=torch.int32).view(1, -1)
            used = torch.tensor([kl], device=self.device, dtype=torch.int32)
            out = self._varlen(q, kc, vc, cu_q, cu_k, ql, kl, True, used, table)
        else:
            out = self._varlen(q, k, v, cu_q, cu_k, ql, kl, True)
        ref = self._sdpa(
            q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0), True
        )[0].transpose(0, 1)
        return bool(torch.allclose(out.float(), ref.float(), atol=3e-2, rtol=3e-2))


def _cumsum(xs):
    t = 0
    for x in xs:
        t += x
        yield t


class LayerShard:
    """Weights and operators of one decoder layer on one TP rank.

    ``copies`` independent weight sets are allocated so that the profiler
    can rotate through them and keep weights out of the L2 cache.
    """

    def __init__(self, model: ModelSpec, tp: int, device: torch.device, dtype: torch.dtype, max_pos: int | None = None):
        self.model = model
        self.shape = ShardShape(model, tp)
        self.device = device
        self.dtype = dtype
        self.attention = Attention(self.shape, device, dtype)
        self.cos, self.sin = rope_cache(self.shape, max_pos or model.max_position_embeddings, device, dtype)

    @property
    def attention_backend(self) -> str:
        return self.attention.backend

    # -- weights -------------------------------------------------------------
    def _w(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, dtype=self.dtype) * 0.02

    def weight_shapes(self, op: str) -> list[tuple[int, ...]]:
        """Parameter shapes an operator reads (for rotation sizing and launch-cost runs)."""
        s, m = self.shape, self.model
        h = s.hidden
        if op in ("input_norm", "post_norm", "final_norm"):
            return [(h,), (h,)] if m.norm == "layernorm" else [(h,)]
        if op == "qkv_proj":
            return [(s.qkv_out, h)] + ([(s.qkv_out,)] if m.attention_bias else [])
        if op == "o_proj":
            return [(h, s.q_heads * s.head_dim)] + ([(h,)] if m.output_bias else [])
        if op == "gate_up_proj":
            out = (2 if m.gated_mlp else 1) * s.inter
            return [(out, h)] + ([(out,)] if m.mlp_bias else [])
        if op == "down_proj":
            return [(h, s.inter)] + ([(h,)] if m.mlp_bias else [])
        if op in ("embed", "lm_head"):
            return [(s.vocab, h)]
        return []

    def signature(self, op: str) -> tuple:
        """Operators with equal signatures take equal time (measure once, reuse)."""
        s, m = self.shape, self.model
        if op in ("input_norm", "post_norm", "final_norm"):
            return ("norm", m.norm, s.hidden)
        if op == "add":
            return ("add", s.hidden)
        if op == "act":
            return ("act", m.gated_mlp, m.activation, s.inter)
        if op == "rope":
            return ("rope", s.q_heads, s.kv_heads, s.head_dim, s.rot_dim)
        if op == "kv_cache_write":
            return ("kv_write", s.kv_heads, s.head_dim)
        if op == "sample":
            return ("sample", s.vocab)
        return (op,) + tuple(self.weight_shapes(op))

    # -- token-level operators ---------------------------------------------------
    def token_op(self, op: str, max_n: int, copies: int = 1) -> Callable[[int], list[Fn]]:
        """Allocate buffers for ``op`` up to ``max_n`` tokens; return ``bind(n) -> [closure per copy]``."""
        s, m, dev, dt = self.shape, self.model, self.device, self.dtype
        h = s.hidden
        c = max(1, copies)

        def xs(width: int, count: int = c) -> list[torch.Tensor]:
            return [torch.randn(max_n, width, device=dev, dtype=dt) for _ in range(count)]

        if op in ("input_norm", "post_norm", "final_norm"):
            ws = [self._w(h) + 1 for _ in range(c)]
            bs = [self._w(h) if m.norm == "layernorm" else None for _ in range(c)]
            x = xs(h)
            return lambda n: [(lambda i=i: _norm(m, x[i][:n], ws[i], bs[i])) for i in range(c)]
        if op in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"):
            shapes = self.weight_shapes(op)
            out_f, in_f = shapes[0]
            ws = [self._w(out_f, in_f) for _ in range(c)]
            bs = [self._w(*shapes[1]) if len(shapes) > 1 else None for _ in range(c)]
            x = xs(in_f)
            return lambda n: [(lambda i=i: F.linear(x[i][:n], ws[i], bs[i])) for i in range(c)]
        if op == "act":
            width = (2 if m.gated_mlp else 1) * s.inter
            x = xs(width)
            return lambda n: [(lambda i=i: _act(m, x[i][:n], s.inter)) for i in range(c)]
        if op == "add":
            a, b = xs(h), xs(h)
            return lambda n: [(lambda i=i: a[i][:n] + b[i][:n]) for i in range(c)]
        if op == "rope":
            q = [torch.randn(max_n, s.q_heads, s.head_dim, device=dev, dtype=dt) for _ in range(c)]
            k = [torch.randn(max_n, s.kv_heads, s.head_dim, device=dev, dtype=dt) for _ in range(c)]
            limit = self.cos.shape[0]
            pos = torch.randint(0, limit, (max_n,), device=dev)
            return lambda n: [
                (lambda i=i: apply_rope(q[i][:n], k[i][:n], pos[:n], self.cos, self.sin, s.rot_dim)) for i in range(c)
            ]
        if op == "kv_cache_write":
            slots_total = max(max_n * 2, PAGE)
            kc = torch.zeros(slots_total, s.kv_heads, s.head_dim, device=dev, dtype=dt)
            vc = torch.zeros_like(kc)
            k = torch.randn(max_n, s.kv_heads, s.head_dim, device=dev, dtype=dt)
            v = torch.randn_like(k)
            slots = torch.randperm(slots_total, device=dev)[:max_n]

            def write(n: int) -> None:
                kc.index_copy_(0, slots[:n], k[:n])
                vc.index_copy_(0, slots[:n], v[:n])

            return lambda n: [lambda: write(n)]
        if op == "embed":
            ws = [self._w(s.vocab, h) for _ in range(c)]
            ids = torch.randint(0, s.vocab, (max_n,), device=dev)
            return lambda n: [(lambda i=i: F.embedding(ids[:n], ws[i])) for i in range(c)]
        if op == "sample":
            logits = [torch.randn(max_n, s.vocab, device=dev, dtype=dt) for _ in range(c)]
            return lambda n: [(lambda i=i: torch.argmax(logits[i][:n], dim=-1)) for i in range(c)]
        raise ValueError(f"unknown token operator {op!r}")

    def op_bytes(self, op: str) -> int:
        """Bytes of weights one call reads (for sizing the rotation)."""
        return sum(math.prod(shp) for shp in self.weight_shapes(op)) * self.dtype.itemsize

    # -- whole layer (launch-cost measurement, reference execution) --------------
    def make_weights(self) -> dict[str, torch.Tensor | None]:
        w: dict[str, torch.Tensor | None] = {}
        for op in ("input_norm", "post_norm", "qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
            shapes = self.weight_shapes(op)
            w[op] = self._w(*shapes[0]) + (1 if "norm" in op else 0)
            w[op + ".bias"] = self._w(*shapes[1]) if len(shapes) > 1 else None
        return w

    def forward(
        self,
        x: torch.Tensor,
        w: dict,
        q_lens: list[int],
        ctxs: list[int],
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        slots: torch.Tensor,
        pos: torch.Tensor,
        attn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One decoder layer over a mixed batch (TP all-reduces left out).

        ``x``: [tokens, hidden] with each request's new tokens contiguous;
        ``k_cache``/``v_cache``: [slots, kv_heads, head_dim]; ``slots`` the
        cache slot of each new token; ``attn(q, k_cache, v_cache)`` computes
        attention of the new tokens. By default the requests' KV are assumed
        to lie back to back in the cache (request i at ``sum(previous kv)``),
        attended with the profiled backend: one varlen FlashAttention call on
        CUDA, per-request SDPA on CPU.
        """
        s, m = self.shape, self.model
        n = x.shape[0]
        residual = x
        hs = _norm(m, x, w["input_norm"], w.get("input_norm.bias"))
        qkv = F.linear(hs, w["qkv_proj"], w.get("qkv_proj.bias"))
        qd, kd = s.q_heads * s.head_dim, s.kv_heads * s.head_dim
        q = qkv[:, :qd].reshape(n, s.q_heads, s.head_dim)
        k = qkv[:, qd : qd + kd].reshape(n, s.kv_heads, s.head_dim)
        v = qkv[:, qd + kd :].reshape(n, s.kv_heads, s.head_dim)
        q = q.contiguous()
        k = k.contiguous()
        apply_rope(q, k, pos, self.cos, self.sin, s.rot_dim)
        k_cache.index_copy_(0, slots, k)
        v_cache.index_copy_(0, slots, v.contiguous())
        if attn is not None:
            a = attn(q, k_cache, v_cache)
        elif self.attention.backend in ("varlen", "varlen_paged"):
            # requests' KV lie back to back in the cache: it already is the packed varlen layout
            kv_lens = [c + ql for ql, c in zip(q_lens, ctxs)]
            cu_q = torch.tensor([0, *_cumsum(q_lens)], device=q.device, dtype=torch.int32)
            cu_k = torch.tensor([0, *_cumsum(kv_lens)], device=q.device, dtype=torch.int32)
            total = sum(kv_lens)
            a = self.attention._varlen(
                q, k_cache[:total], v_cache[:total], cu_q, cu_k, max(q_lens), max(kv_lens), True
            )
        else:
            outs = []
            at_q, at_k = 0, 0
            for ql, c in zip(q_lens, ctxs):
                kl = c + ql
                qq = q[at_q : at_q + ql].transpose(0, 1).unsqueeze(0)
                kk = k_cache[at_k : at_k + kl].transpose(0, 1).unsqueeze(0)
                vv = v_cache[at_k : at_k + kl].transpose(0, 1).unsqueeze(0)
                outs.append(self.attention._sdpa(qq, kk, vv, True)[0].transpose(0, 1))
                at_q += ql
                at_k += kl
            a = torch.cat(outs, 0)
        o = F.linear(a.reshape(n, qd), w["o_proj"], w.get("o_proj.bias"))
        if m.parallel_attn_mlp:
            mlp_in = hs
        else:
            x = residual + o
            residual = x
            mlp_in = _norm(m, x, w["post_norm"], w.get("post_norm.bias"))
        gu = F.linear(mlp_in, w["gate_up_proj"], w.get("gate_up_proj.bias"))
        d = F.linear(_act(m, gu, s.inter), w["down_proj"], w.get("down_proj.bias"))
        if m.parallel_attn_mlp:
            return residual + o + d
        return residual + d
