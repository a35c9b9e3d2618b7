"""PyTorch operators of a decoder layer: one implementation for the profiler and the executor.

:func:`layer_forward` is *the* decoder layer: the reference executor
(:class:`vidur.reference.executor.ReferenceExecutor`) runs it for every layer
of every iteration, and the profiler times it (on CPU inside the executor's
own iterations; on GPU its operators one by one through the same functions,
and its host launch time as a whole). What is profiled is what is executed.

Each step of the layer is one named operator of the profile
(:data:`vidur.store.profiles.LAYER_TOKEN_OPS` plus ``attn``); an optional
``tick(op)`` callback after each step lets a host clock attribute every
nanosecond of the layer, glue included, to the operator it follows
(:class:`OpClock`).

Tensor parallelism ``t`` is emulated on one device by sharding the weight
and head dimensions (Megatron style: QKV and gate/up column-parallel,
output and down projections row-parallel, vocabulary-parallel embedding and
LM head); the all-reduces are priced separately by the collective model.

Attention kernels live in :mod:`vidur.reference.attention`, shared the same
way: the executor and the profiler try the same kernels in the same order
(paged FlashAttention, FlashAttention over slot ranges, SDPA per request)
and lay the KV cache out alike. On CPU the executor runs one
:func:`~vidur.reference.attention.sdpa_chunk` per request, and that is what
the CPU profile measures.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from vidur.model.spec import ModelSpec
from vidur.reference.attention import Attention, cumsum, flash_varlen, sdpa_chunk
from vidur.reference.kv import PAGE
from vidur.reference.shapes import ShardShape

Fn = Callable[[], object]
Tick = Callable[[str], None]

#: the operators of one decoder layer, in execution order (``add`` twice); ``attn`` is attention
LAYER_STEPS = (
    "input_norm", "qkv_proj", "rope", "kv_cache_write", "attn", "o_proj", "add",
    "post_norm", "gate_up_proj", "act", "down_proj", "add",
)
#: a mixture of experts replaces ``gate_up_proj``, ``act``, ``down_proj`` by these steps
MOE_STEPS = ("router", "experts")


# --- the operators ------------------------------------------------------------------------


def norm(model: ModelSpec, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if model.norm == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)
    return F.rms_norm(x, (x.shape[-1],), w, 1e-5)


def act(model: ModelSpec, x: torch.Tensor, inter: int) -> torch.Tensor:
    if model.gated_mlp:
        return F.silu(x[:, :inter]) * x[:, inter:]
    if "gelu" in model.activation:
        return F.gelu(x, approximate="tanh" if "new" in model.activation or "tanh" in model.activation else "none")
    return F.silu(x)


def rope_cache(shape: ShardShape, max_pos: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [max_pos, rot_dim / 2] of the rotary embedding."""
    half = max(1, shape.rot_dim // 2)
    inv = 1.0 / (shape.model.rope_theta ** (torch.arange(0, half, device=device, dtype=torch.float32) / half))
    t = torch.arange(max_pos, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def rope_gather(cos_c: torch.Tensor, sin_c: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary factors of the positions ``pos`` (once per forward pass), shaped [n, 1, rot/2]."""
    return cos_c[pos].unsqueeze(1), sin_c[pos].unsqueeze(1)


def rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, shape: ShardShape):
    """Split the fused QKV output and rotate the first ``rot_dim`` dims of every Q and K head.

    Rotate-half (Llama/NeoX style), in one pass over Q and K together;
    returns ``q`` [n, Hq, D], ``k`` [n, Hkv, D] (views of one new tensor) and
    ``v`` [n, Hkv, D] (a view of ``qkv``).
    """
    n = qkv.shape[0]
    hq, hkv, d = shape.q_heads, shape.kv_heads, shape.head_dim
    qd, kd = hq * d, hkv * d
    qk = qkv[:, : qd + kd].view(n, hq + hkv, d)
    rot = shape.rot_dim
    half = rot // 2
    a, b = qk[..., :half], qk[..., half:rot]
    if rot == d:
        qk = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    else:
        qk = torch.cat((a * cos - b * sin, b * cos + a * sin, qk[..., rot:]), dim=-1)
    return qk[:, :hq], qk[:, hq:], qkv[:, qd + kd :].view(n, hkv, d)


def route(shape: ShardShape, x: torch.Tensor, w: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k routing: each token's ``k`` expert ids [n, k] and their weights (a softmax over the
    chosen logits, Mixtral's renormalised top-k); one expert: every token to it, weight 1."""
    n, k = x.shape[0], shape.top_k
    if w.get("router") is None:
        return torch.zeros(n, k, dtype=torch.long, device=x.device), torch.ones(n, k, dtype=x.dtype, device=x.device)
    logits = F.linear(x, w["router"], w.get("router.bias"))
    top, ids = torch.topk(logits, k, dim=-1)
    return ids, torch.softmax(top.float(), dim=-1).to(x.dtype)


def experts_kernel(shape: ShardShape, device: torch.device, dtype: torch.dtype) -> str:
    """How :func:`experts_forward` runs the experts here: ``grouped_mm`` or ``loop``.

    ``grouped_mm``: one grouped GEMM over all experts for each of the two
    projections (``torch._grouped_mm``; CUDA on compute capability 9.0+, bf16,
    16-byte aligned widths): no host synchronisation, CUDA-graph capturable,
    the form fused-MoE engines run (vLLM's ``fused_moe``, SGLang's grouped
    GEMMs). ``loop``: one pair of GEMMs per expert with tokens (CPU, and GPUs or
    torch builds without a grouped GEMM); its host syncs and per-expert
    launches make a GPU profile of it much slower than an engine's MoE layer.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or dtype != torch.bfloat16 or not hasattr(torch, "_grouped_mm"):
        return "loop"
    if torch.cuda.get_device_capability(dev) < (9, 0):
        return "loop"
    if shape.hidden % 8 or shape.expert_width % 8:
        return "loop"
    return "grouped_mm"


def experts_forward(
    shape: ShardShape, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, w: dict, kernel: str = "loop"
) -> torch.Tensor:
    """The routed experts: tokens gathered by expert, each expert's gated MLP over its tokens, the
    outputs weighted and scattered back (summed over each token's ``k`` experts).

    ``kernel`` is :func:`experts_kernel`'s choice; both give the same result."""
    if kernel == "grouped_mm":
        return _experts_grouped(shape, x, ids, weights, w)
    m = shape.model
    k = ids.shape[1]
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=shape.experts).tolist()
    tok = order // k
    xs = x.index_select(0, tok)
    gu_w, gu_b = w["experts.gate_up"], w.get("experts.gate_up.bias")
    dn_w, dn_b = w["experts.down"], w.get("experts.down.bias")
    outs = []
    start = 0
    for e, c in enumerate(counts):
        if not c:
            continue
        seg = xs[start : start + c]
        h = act(m, F.linear(seg, gu_w[e], None if gu_b is None else gu_b[e]), shape.expert_width)
        outs.append(F.linear(h, dn_w[e], None if dn_b is None else dn_b[e]))
        start += c
    y = (outs[0] if len(outs) == 1 else torch.cat(outs, 0)) * weights.reshape(-1).index_select(0, order).unsqueeze(1)
    return torch.zeros_like(x).index_add_(0, tok, y)


def _experts_grouped(shape: ShardShape, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, w: dict) -> torch.Tensor:
    """:func:`experts_forward` with one grouped GEMM per projection (group sizes stay on the device)."""
    m = shape.model
    k = ids.shape[1]
    flat = ids.reshape(-1)
    expert_of_row, order = torch.sort(flat, stable=True)
    counts = torch.zeros(shape.experts, dtype=torch.int64, device=x.device).scatter_add_(0, flat, torch.ones_like(flat))
    offs = torch.cumsum(counts, 0).to(torch.int32)
    tok = order // k
    xs = x.index_select(0, tok)
    gu_w, gu_b = w["experts.gate_up"], w.get("experts.gate_up.bias")
    dn_w, dn_b = w["experts.down"], w.get("experts.down.bias")
    h = torch._grouped_mm(xs, gu_w.transpose(1, 2), offs=offs)
    if gu_b is not None:
        h = h + gu_b.index_select(0, expert_of_row)
    h = act(m, h, shape.expert_width)
    y = torch._grouped_mm(h, dn_w.transpose(1, 2), offs=offs)
    if dn_b is not None:
        y = y + dn_b.index_select(0, expert_of_row)
    y = y * weights.reshape(-1).index_select(0, order).unsqueeze(1)
    return torch.zeros_like(x).index_add_(0, tok, y)


class KV(Protocol):
    """The KV cache of one iteration as a layer sees it."""

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the new tokens' keys and values of ``layer``."""

    def attend(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """Attention of the new tokens' queries [n, Hq, D] over the cache -> [n, Hq, D]."""


def init_layer_weights(shape: ShardShape, normal: Callable[..., torch.Tensor], ones: Callable[[int], torch.Tensor]) -> dict:
    """One layer's parameters, keyed by operator (``<op>`` and ``<op>.bias``; None where absent)."""
    w: dict[str, torch.Tensor | None] = {}
    for key, shp in shape.layer_weight_shapes().items():
        if shp is None:
            w[key] = None
        elif key.endswith("norm"):
            w[key] = ones(shp[0])
        else:
            w[key] = normal(*shp)
    return w


def layer_forward(
    shape: ShardShape,
    x: torch.Tensor,
    w: dict,
    cos: torch.Tensor,
    sin: torch.Tensor,
    kv: KV,
    li: int = 0,
    tick: Tick | None = None,
    experts: str = "loop",
) -> torch.Tensor:
    """One decoder layer (TP all-reduces left out) over the iteration's tokens ``x`` [n, hidden].

    ``cos``/``sin``: the rotary factors of the tokens' positions
    (:func:`rope_gather`); ``kv``: the iteration's KV cache; ``tick(op)`` (if
    given) is called after each step with the operator's name; ``experts``: how
    a mixture of experts runs (:func:`experts_kernel`).
    """
    m = shape.model
    n = x.shape[0]
    hs = norm(m, x, w["input_norm"], w["input_norm.bias"])
    if tick is not None:
        tick("input_norm")
    qkv = F.linear(hs, w["qkv_proj"], w["qkv_proj.bias"])
    if tick is not None:
        tick("qkv_proj")
    q, k, v = rope(qkv, cos, sin, shape)
    if tick is not None:
        tick("rope")
    kv.write(li, k, v)
    if tick is not None:
        tick("kv_cache_write")
    a = kv.attend(li, q)
    if tick is not None:
        tick("attn")
    o = F.linear(a.reshape(n, shape.q_dim), w["o_proj"], w["o_proj.bias"])
    if tick is not None:
        tick("o_proj")
    if m.parallel_attn_mlp:
        mlp_in = hs
    else:
        x = x + o
        if tick is not None:
            tick("add")
        mlp_in = norm(m, x, w["post_norm"], w["post_norm.bias"])
        if tick is not None:
            tick("post_norm")
    if m.is_moe:
        ids, weights = route(shape, mlp_in, w)
        if tick is not None and m.num_experts > 1:
            tick("router")
        d = experts_forward(shape, mlp_in, ids, weights, w, experts)
        if tick is not None:
            tick("experts")
    else:
        gu = F.linear(mlp_in, w["gate_up_proj"], w["gate_up_proj.bias"])
        if tick is not None:
            tick("gate_up_proj")
        h = act(m, gu, shape.inter)
        if tick is not None:
            tick("act")
        d = F.linear(h, w["down_proj"], w["down_proj.bias"])
        if tick is not None:
            tick("down_proj")
    if m.parallel_attn_mlp:
        x = x + o
        if tick is not None:
            tick("add")
    x = x + d
    if tick is not None:
        tick("add")
    return x


def embed_forward(ids: torch.Tensor, table: torch.Tensor, pos: torch.Tensor, cos_c, sin_c, tick: Tick | None = None):
    """Token embedding and the rotary factors of the positions: ``(x, cos, sin)``."""
    x = F.embedding(ids, table)
    cos, sin = rope_gather(cos_c, sin_c, pos)
    if tick is not None:
        tick("embed")
    return x, cos, sin


def head_forward(
    model: ModelSpec,
    x: torch.Tensor,
    last: torch.Tensor | None,
    norm_w: torch.Tensor,
    norm_b: torch.Tensor | None,
    lm_head: torch.Tensor,
    lm_bias: torch.Tensor | None = None,
    tick: Tick | None = None,
) -> torch.Tensor:
    """Final norm of each sequence's last token (rows ``last``; None: every row), LM head, greedy argmax."""
    h = x if last is None else x.index_select(0, last)
    h = norm(model, h, norm_w, norm_b)
    if tick is not None:
        tick("final_norm")
    logits = F.linear(h, lm_head, lm_bias)
    if tick is not None:
        tick("lm_head")
    tokens = torch.argmax(logits, dim=-1)
    if tick is not None:
        tick("sample")
    return tokens


class OpClock:
    """A host clock that charges the time since the previous tick to the operator named at each tick.

    ``clock.start()``, then ``clock(op)`` after each operator: ``sums[op]``
    (seconds) and ``counts[op]`` accumulate. :attr:`overhead` (seconds per
    tick, measured once per process by :func:`tick_overhead`) is taken off
    every interval, so the sums are what the operators take without the clock.
    Only meaningful where the host waits for every operator (CPU).
    """

    __slots__ = ("counts", "overhead", "sums", "t")

    def __init__(self, overhead: float | None = None):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.overhead = tick_overhead() if overhead is None else overhead
        self.t = 0.0

    def start(self) -> None:
        self.t = time.perf_counter()

    def __call__(self, op: str) -> None:
        now = time.perf_counter()
        sums = self.sums
        if op in sums:
            sums[op] += now - self.t
            self.counts[op] += 1
        else:
            sums[op] = now - self.t
            self.counts[op] = 1
        self.t = time.perf_counter()

    def per_call(self) -> dict[str, float]:
        """Mean seconds per call of each operator, the clock's own cost taken off."""
        return {op: max(0.0, s / self.counts[op] - self.overhead) for op, s in self.sums.items()}


_TICK_OVERHEAD: list[float] = []


def tick_overhead() -> float:
    """Seconds an :class:`OpClock` interval gains from the clock itself (median of a few calibrations)."""
    if not _TICK_OVERHEAD:
        runs = []
        for _ in range(5):
            c = OpClock(0.0)
            c.start()
            for _ in range(2000):
                c("x")
            runs.append(c.sums["x"] / c.counts["x"])
        runs.sort()
        _TICK_OVERHEAD.append(runs[len(runs) // 2])
    return _TICK_OVERHEAD[0]


class LayerShard:
    """One decoder layer on one TP rank, for timing its operators one by one (GPU profiling).

    Every closure :meth:`token_op` returns calls the same function the layer
    (:func:`layer_forward`) calls at that step; ``copies`` independent input
    and weight sets let the profiler rotate through them and keep weights out
    of the L2 cache. :meth:`forward` runs the shared layer itself.
    """

    def __init__(self, model: ModelSpec, tp: int, device: torch.device, dtype: torch.dtype, max_pos: int | None = None):
        self.model = model
        self.shape = ShardShape(model, tp)
        self.device = device
        self.dtype = dtype
        self.attention = Attention(self.shape, device, dtype)
        self.cos, self.sin = rope_cache(self.shape, max_pos or model.max_position_embeddings, device, dtype)
        #: how the routed experts run (:func:`experts_kernel`); None for a dense model
        self.experts_kernel = experts_kernel(self.shape, device, dtype) if model.is_moe else None

    @property
    def attention_backend(self) -> str:
        return self.attention.backend

    # -- weights -------------------------------------------------------------
    def _w(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, dtype=self.dtype) * 0.02

    def weight_shapes(self, op: str) -> list[tuple[int, ...]]:
        """Parameter shapes an operator reads (for rotation sizing and launch-cost runs)."""
        s = self.shape
        if op in ("embed", "lm_head"):
            return [(s.vocab, s.hidden)]
        if op == "final_norm":
            return [(s.hidden,), (s.hidden,)] if self.model.norm == "layernorm" else [(s.hidden,)]
        layer = s.layer_weight_shapes()
        if op == "post_norm" and self.model.norm == "layernorm":
            return [(s.hidden,), (s.hidden,)]
        if op == "experts":
            return [shp for key, shp in layer.items() if key.startswith("experts.") and shp]
        if op not in layer:
            return []
        return [layer[op]] + ([layer[op + ".bias"]] if layer.get(op + ".bias") else [])

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
            return lambda n: [(lambda i=i: norm(m, x[i][:n], ws[i], bs[i])) for i in range(c)]
        if op in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"):
            shapes = self.weight_shapes(op)
            out_f, in_f = shapes[0]
            ws = [self._w(out_f, in_f) for _ in range(c)]
            bs = [self._w(*shapes[1]) if len(shapes) > 1 else None for _ in range(c)]
            x = xs(in_f)
            return lambda n: [(lambda i=i: F.linear(x[i][:n], ws[i], bs[i])) for i in range(c)]
        if op == "act":
            x = xs(s.gate_up_out)
            return lambda n: [(lambda i=i: act(m, x[i][:n], s.inter)) for i in range(c)]
        if op == "router":
            ws = [self._w(m.num_experts, h) for _ in range(c)]
            x = xs(h)
            return lambda n: [(lambda i=i: F.linear(x[i][:n], ws[i])) for i in range(c)]
        if op == "experts":
            # uniform random routing of the tokens, as a balanced router gives on average
            wsets = [init_layer_weights(s, self._w, lambda k: self._w(k) + 1) for _ in range(c)]
            x = xs(h)
            gen = torch.Generator(device="cpu").manual_seed(0)
            keys = torch.rand(max_n, m.num_experts, generator=gen)
            ids = torch.topk(keys, s.top_k, dim=-1).indices.to(dev)
            wts = torch.full((max_n, s.top_k), 1.0 / s.top_k, device=dev, dtype=dt)
            ek = self.experts_kernel
            return lambda n: [(lambda i=i: experts_forward(s, x[i][:n], ids[:n], wts[:n], wsets[i], ek)) for i in range(c)]
        if op == "add":
            a, b = xs(h), xs(h)
            return lambda n: [(lambda i=i: a[i][:n] + b[i][:n]) for i in range(c)]
        if op == "rope":
            qkv = xs(s.qkv_out)
            limit = self.cos.shape[0]
            pos = torch.randint(0, limit, (max_n,), device=dev)
            cos, sin = rope_gather(self.cos, self.sin, pos)
            return lambda n: [(lambda i=i: rope(qkv[i][:n], cos[:n], sin[:n], s)) for i in range(c)]
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

    # -- whole layer (launch-cost measurement) --------------------------------------
    def make_weights(self) -> dict[str, torch.Tensor | None]:
        return init_layer_weights(self.shape, self._w, lambda n: self._w(n) + 1)

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
        """:func:`layer_forward` over a mixed batch whose KV lies back to back in one cache.

        ``x``: [tokens, hidden] with each request's new tokens contiguous;
        ``k_cache``/``v_cache``: [slots, kv_heads, head_dim]; ``slots`` the
        cache slot of each new token (request i's KV starts at the sum of the
        previous requests' ``ctx + q``); ``attn(q, k_cache, v_cache)``
        replaces the attention (default: one FlashAttention call on CUDA when
        it works, per-request :func:`sdpa_chunk` otherwise).
        """
        cos, sin = rope_gather(self.cos, self.sin, pos)
        kv = _BackToBackKV(self, q_lens, ctxs, k_cache, v_cache, slots, attn)
        return layer_forward(self.shape, x, w, cos, sin, kv, experts=self.experts_kernel or "loop")


class _BackToBackKV:
    """One layer's KV cache with the requests' tokens back to back (:meth:`LayerShard.forward`)."""

    def __init__(self, layer: LayerShard, q_lens, ctxs, kc, vc, slots, attn):
        self.layer, self.q_lens, self.ctxs = layer, q_lens, ctxs
        self.kc, self.vc, self.slots, self.attn = kc, vc, slots, attn

    def write(self, li: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.kc.index_copy_(0, self.slots, k)
        self.vc.index_copy_(0, self.slots, v)

    def attend(self, li: int, q: torch.Tensor) -> torch.Tensor:
        layer, kc, vc = self.layer, self.kc, self.vc
        q = q.contiguous()
        if self.attn is not None:
            return self.attn(q, kc, vc)
        att = layer.attention
        if att.device.type == "cuda" and att.backend != "sdpa" and "flash" not in att.errors:
            # requests' KV lie back to back in one pool: FlashAttention over slot ranges, as the executor runs
            kv_lens = [c + ql for ql, c in zip(self.q_lens, self.ctxs)]
            cu_q = torch.tensor([0, *cumsum(self.q_lens)], device=q.device, dtype=torch.int32)
            starts = torch.tensor([0, *cumsum(kv_lens)], device=q.device, dtype=torch.int32)
            starts[-1] = 0
            used = torch.tensor(kv_lens, device=q.device, dtype=torch.int32)
            max_q = max(self.q_lens)
            return flash_varlen(q, kc, vc, cu_q, starts, max_q, max(kv_lens), used, max_q > 1, att.scale)
        s = layer.shape
        outs = []
        at_q, at_k = 0, 0
        for ql, c in zip(self.q_lens, self.ctxs):
            kl = c + ql
            kk = kc[at_k : at_k + kl].transpose(0, 1)
            vv = vc[at_k : at_k + kl].transpose(0, 1)
            outs.append(sdpa_chunk(q[at_q : at_q + ql], kk, vv, c, att.scale, s.q_heads != s.kv_heads))
            at_q += ql
            at_k += kl
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)
