"""Analytical FLOPs, bytes and weight shards of a model on one TP (and EP) rank.

Every operator's cost is linear in a few per-batch aggregates (see
:class:`vidur.estimate.base.BatchShape`), so an operator is a table of
coefficients (:class:`OpCost`). The roofline estimator turns these tables
into times; :func:`batch_flops` / :func:`batch_bytes` evaluate them on
arrays of per-batch aggregates for MFU/MBU reports. Both use the same
tables, so the figures agree.

Aggregates (the ``VARS``):

- ``one``: 1 per iteration (weights are read once per call)
- ``tokens``: query tokens in the batch
- ``prefill_tokens``, ``prefill_work`` (Σ q·(ctx+(q+1)/2)), ``prefill_kv`` (Σ ctx+q)
- ``num_decode``, ``decode_kv`` (Σ ctx+1 over decodes)
- ``seqs``: sequences in the batch (LM head and sampling)
- ``assigned``: token-expert assignments on the busiest EP rank, and
  ``experts``: experts of one rank that receive a token (MoE layers; both
  functions of ``tokens`` under top-k routing, :mod:`vidur.model.routing`)

Layers come in kinds (:func:`layer_kinds`): dense or MoE MLP, full or
sliding-window attention. The attention operators are the same for both
attention kinds; a sliding-window layer evaluates them on window-bounded
aggregates (:func:`window_values`). Multi-head latent attention (MLA) has
its own projections and attention terms (:func:`attention_ops`).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import attrs
import numpy as np

from vidur.model.catalog import kv_heads_per_rank
from vidur.model.routing import active_experts, busiest_rank_assignments
from vidur.model.spec import ModelSpec

VARS = (
    "one", "tokens", "prefill_tokens", "prefill_work", "prefill_kv", "num_decode", "decode_kv", "seqs",
    "assigned", "experts",
)

#: operator kinds; the roofline picks efficiencies by kind
KINDS = ("gemm", "elementwise", "attn_prefill", "attn_decode")

LOGIT_BYTES = 4  # logits are computed and sampled in fp32


def _coeffs(value: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    for var in value:
        if var not in VARS:
            raise ValueError(f"unknown cost variable {var!r}")
    return tuple((k, float(v)) for k, v in value.items() if v)


@attrs.frozen
class OpCost:
    """One operator on one TP rank: FLOPs and HBM bytes as linear forms of the aggregates.

    ``flops`` and ``bytes`` are ``((var, coefficient), ...)``; one call of the
    operator costs Σ coefficient × aggregate. ``count`` is how many times the
    operator runs per layer (e.g. 2 residual adds).
    """

    name: str
    kind: str
    flops: tuple[tuple[str, float], ...] = ()
    bytes: tuple[tuple[str, float], ...] = ()
    count: int = 1

    @classmethod
    def make(cls, name: str, kind: str, flops: Mapping[str, float] | None = None,
             bytes: Mapping[str, float] | None = None, count: int = 1) -> "OpCost":
        """Build from ``{var: coefficient}`` dictionaries (zero terms dropped)."""
        if kind not in KINDS:
            raise ValueError(f"unknown operator kind {kind!r}")
        return cls(name, kind, _coeffs(flops or {}), _coeffs(bytes or {}), count)

    def coef(self, which: str, var: str) -> float:
        """The coefficient of ``var`` in ``flops`` or ``bytes`` (0 if absent)."""
        return dict(getattr(self, which)).get(var, 0.0)

    def variables(self) -> set[str]:
        """Aggregates this operator's cost depends on."""
        return {v for v, _ in self.flops} | {v for v, _ in self.bytes}

    def evaluate(self, values: Mapping[str, object]) -> tuple[object, object]:
        """(FLOPs, bytes) of one call for scalar or array ``values`` of the aggregates."""
        f = sum(c * values[v] for v, c in self.flops) if self.flops else 0.0
        b = sum(c * values[v] for v, c in self.bytes) if self.bytes else 0.0
        return f, b


# -- shapes of one rank ------------------------------------------------------


@attrs.frozen
class RankShape:
    """Per-rank dimensions of a model split ``tp`` ways (experts ``ep`` ways)."""

    hidden: int
    heads: int  # attention heads on this rank
    kv_heads: int  # KV heads on this rank (replicated when tp > kv heads)
    head_dim: int
    intermediate: int  # dense MLP width on this rank
    vocab: int  # vocabulary rows on this rank (vocab-parallel)
    experts: int = 0  # routed experts on this rank (E / ep)
    expert_width: int = 0  # width of each routed expert on this rank (moe_intermediate / (tp / ep))
    shared_width: int = 0  # width of the shared experts on this rank

    @property
    def q_size(self) -> int:
        """Query width on this rank."""
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Key (or value) width on this rank."""
        return self.kv_heads * self.head_dim


def rank_shape(model: ModelSpec, tp: int) -> RankShape:
    """Per-rank dimensions for tensor parallelism ``tp`` (and the model's ``expert_parallel``)."""
    ep = model.expert_parallel
    return RankShape(
        hidden=model.hidden_size,
        heads=model.num_heads // tp,
        kv_heads=kv_heads_per_rank(model, tp),
        head_dim=model.head_dim,
        intermediate=math.ceil(model.intermediate_size / tp),
        vocab=math.ceil(model.vocab_size / tp),
        experts=model.num_experts // ep if model.is_moe else 0,
        expert_width=math.ceil(model.moe_intermediate_size * ep / tp) if model.is_moe else 0,
        shared_width=math.ceil(model.shared_expert_intermediate_size / tp),
    )


@attrs.frozen
class LayerKind:
    """``count`` decoder layers with a dense (``moe`` False) or MoE MLP."""

    count: int
    moe: bool


def layer_kinds(model: ModelSpec) -> tuple[LayerKind, ...]:
    """The model's layers grouped by MLP kind (dense first: DeepSeek's first layers are dense)."""
    kinds = []
    dense = model.num_dense_layers_or_all()
    if dense:
        kinds.append(LayerKind(dense, False))
    if model.num_moe_layers:
        kinds.append(LayerKind(model.num_moe_layers, True))
    return tuple(kinds)


def routing_values(model: ModelSpec, tokens, imbalance: float = 1.0) -> tuple[object, object]:
    """(``assigned``, ``experts``) of one MoE layer's busiest rank for ``tokens`` (scalar or array)."""
    if not model.is_moe:
        return tokens * 0.0, tokens * 0.0
    ep, k = model.expert_parallel, model.experts_per_token
    return (
        busiest_rank_assignments(tokens, k, ep, imbalance),
        active_experts(tokens, model.num_experts, k, ep),
    )


# -- weights and KV bytes of a shard ------------------------------------------


def _attention_params_per_rank(model: ModelSpec, r: RankShape) -> int:
    h = r.hidden
    if model.is_mla:
        qk = model.qk_nope_head_dim + model.qk_rope_head_dim
        latent = model.kv_lora_rank + model.qk_rope_head_dim
        if model.q_lora_rank:  # q_a (replicated, fused with kv_a in vLLM) then q_b (column-parallel)
            q = h * model.q_lora_rank + model.q_lora_rank * r.heads * qk
        else:
            q = h * r.heads * qk
        kv = h * latent + model.kv_lora_rank * r.heads * (model.qk_nope_head_dim + model.v_head_dim)
        return q + kv + r.heads * model.v_head_dim * h + model.attention_norm_params()
    qkv = h * (r.q_size + 2 * r.kv_size) + (r.q_size + 2 * r.kv_size if model.attention_bias else 0)
    out = r.q_size * h + (h if model.output_bias else 0)
    return qkv + out + model.attention_norm_params()


def _mlp_params_per_rank(model: ModelSpec, width: int) -> int:
    h = width and model.hidden_size
    n_up = (2 if model.gated_mlp else 1) * width
    return h * n_up + width * h + ((n_up + h) if model.mlp_bias else 0)


def layer_bytes_per_rank(model: ModelSpec, tp: int, moe: bool = False) -> float:
    """Weight bytes of one dense or MoE decoder layer on one GPU (norms and the router replicated)."""
    r = rank_shape(model, tp)
    hp = model.norms_per_layer * model.norm_params
    lin = _attention_params_per_rank(model, r)
    experts = 0
    if moe:
        hp += model.router_params()
        experts = r.experts * _mlp_params_per_rank(model, r.expert_width)
        lin += _mlp_params_per_rank(model, r.shared_width)
    else:
        lin += _mlp_params_per_rank(model, r.intermediate)
    return hp * model.dtype_bytes + lin * model.weight_bytes + experts * model.expert_bytes


def layer_params_per_rank(model: ModelSpec, tp: int, moe: bool = False) -> int:
    """Weights of one dense (or MoE) decoder layer held by one GPU (norms and output/MLP-out biases replicated)."""
    r = rank_shape(model, tp)
    p = model.norms_per_layer * model.norm_params + _attention_params_per_rank(model, r)
    if moe:
        return p + model.router_params() + r.experts * _mlp_params_per_rank(model, r.expert_width) + (
            _mlp_params_per_rank(model, r.shared_width)
        )
    return p + _mlp_params_per_rank(model, r.intermediate)


def stage_weights_bytes(model: ModelSpec, tp: int, pp: int, stage: int) -> int:
    """Weight bytes on one GPU of pipeline stage ``stage`` (0-based) at ``tp`` × ``pp``.

    Stage 0 holds the embedding, the last stage the final norm and LM head
    (a separate copy when tied embeddings are split across stages). Dense
    layers come first (DeepSeek-V3's ``first_k_dense_replace``), so they sit
    on the first stages.
    """
    r = rank_shape(model, tp)
    per_stage = model.num_layers // pp
    first = stage * per_stage
    dense = max(0, min(model.num_dense_layers_or_all() - first, per_stage))
    total = dense * layer_bytes_per_rank(model, tp, False)
    if per_stage - dense:
        total += (per_stage - dense) * layer_bytes_per_rank(model, tp, True)
    params = 0
    if stage == 0:
        params += r.vocab * r.hidden
    if stage == pp - 1:
        params += model.norm_params
        if not (model.tie_word_embeddings and pp == 1):
            params += r.vocab * r.hidden
        if model.lm_head_bias:
            params += r.vocab
    return int(round(total + params * model.dtype_bytes))


def max_stage_weights_bytes(model: ModelSpec, tp: int, pp: int) -> int:
    """Weight bytes per GPU of the heaviest pipeline stage."""
    return max(stage_weights_bytes(model, tp, pp, s) for s in range(pp))


def kv_elements_per_rank(model: ModelSpec, tp: int) -> int:
    """KV-cache elements one token stores in one layer on one GPU.

    Standard attention: 2 × (KV heads of a rank) × head_dim. MLA: the
    latent ``kv_lora_rank + qk_rope_head_dim``, replicated on every TP rank
    (every rank's heads read all of it, as in vLLM's MLA backends).
    """
    if model.is_mla:
        return model.kv_lora_rank + model.qk_rope_head_dim
    return 2 * kv_heads_per_rank(model, tp) * model.head_dim


def stage_layer_split(model: ModelSpec, pp: int) -> tuple[int, int]:
    """(full-attention, sliding-window) layers of one pipeline stage (window layers spread evenly)."""
    per_stage = model.num_layers // pp
    window = round(model.num_window_layers / pp)
    return per_stage - window, window


def kv_bytes_per_token(model: ModelSpec, tp: int, pp: int, kv_dtype_bytes: int | None = None) -> int:
    """KV-cache bytes one token takes on one GPU over the layers of one stage (every layer counted)."""
    b = model.kv_bytes if kv_dtype_bytes is None else kv_dtype_bytes
    return (model.num_layers // pp) * kv_elements_per_rank(model, tp) * b


def kv_bytes_split(model: ModelSpec, tp: int, pp: int, kv_dtype_bytes: int | None = None) -> tuple[int, int]:
    """(full-attention, sliding-window) layers' KV bytes per token on one GPU of a stage.

    A sliding-window layer keeps at most the window's tokens per request
    (plus the partly filled block); the memory planner reserves that per
    sequence instead of per token when the model also has full layers.
    """
    b = model.kv_bytes if kv_dtype_bytes is None else kv_dtype_bytes
    full, window = stage_layer_split(model, pp)
    per_layer = kv_elements_per_rank(model, tp) * b
    return full * per_layer, window * per_layer


# -- operator tables -----------------------------------------------------------


def _mlp_ops(model: ModelSpec, prefix: str, width: int, wb: float, tok: str = "tokens", w: str = "one") -> list[OpCost]:
    """Up (gate+up), activation and down projections of an MLP of ``width`` on ``tok`` tokens;
    its weights are read ``w`` times (``one``; for routed experts, the active ``experts``)."""
    b = model.dtype_bytes
    h = model.hidden_size
    n_up = (2 if model.gated_mlp else 1) * width
    return [
        OpCost.make(
            f"{prefix}_up_proj",
            "gemm",
            {tok: 2 * h * n_up},
            {w: h * n_up * wb + (n_up * b if model.mlp_bias else 0), tok: (h + n_up) * b},
        ),
        OpCost.make(f"{prefix}_act", "elementwise", {tok: (5 if model.gated_mlp else 8) * width}, {tok: (n_up + width) * b}),
        OpCost.make(
            f"{prefix}_down_proj",
            "gemm",
            {tok: 2 * width * h},
            {w: width * h * wb + (h * b if model.mlp_bias else 0), tok: (width + h) * b},
        ),
    ]


def attention_ops(model: ModelSpec, tp: int, kv_dtype_bytes: int | None = None) -> list[OpCost]:
    """Projections, rotary, KV-cache write, prefill and decode attention and output projection of one layer."""
    r = rank_shape(model, tp)
    b = model.dtype_bytes
    wb = model.weight_bytes
    kb = model.kv_bytes if kv_dtype_bytes is None else kv_dtype_bytes
    if model.is_mla:
        return _mla_ops(model, r, b, wb, kb)
    h, d, qs, kvs = r.hidden, r.head_dim, r.q_size, r.kv_size
    qkv = qs + 2 * kvs
    rot = model.partial_rotary_factor
    ops = [
        OpCost.make(
            "attn_pre_proj",
            "gemm",
            {"tokens": 2 * h * qkv},
            {"one": h * qkv * wb + (qkv * b if model.attention_bias else 0), "tokens": (h + qkv) * b},
        ),
    ]
    if model.qk_norm:  # Qwen3: RMSNorm over each query and key head
        ops.append(
            OpCost.make(
                "attn_qk_norm",
                "elementwise",
                {"tokens": 5 * (qs + kvs)},
                {"one": 2 * d * b, "tokens": 2 * (qs + kvs) * b},
            )
        )
    ops += [
        OpCost.make(
            "attn_rope",
            "elementwise",
            {"tokens": 3 * (qs + kvs) * rot},
            {"tokens": (2 * (qs + kvs) + d) * rot * b},
        ),
        OpCost.make("attn_kv_cache_save", "elementwise", {}, {"tokens": 2 * kvs * (b + kb)}),
        OpCost.make(
            "attn_prefill",
            "attn_prefill",
            {"prefill_work": 4 * d * r.heads},
            {"prefill_tokens": 2 * qs * b, "prefill_kv": 2 * kvs * kb},
        ),
        OpCost.make(
            "attn_decode",
            "attn_decode",
            {"decode_kv": 4 * d * r.heads},
            {"num_decode": 2 * qs * b, "decode_kv": 2 * kvs * kb},
        ),
        OpCost.make(
            "attn_post_proj",
            "gemm",
            {"tokens": 2 * qs * h},
            {"one": qs * h * wb + (h * b if model.output_bias else 0), "tokens": (qs + h) * b},
        ),
    ]
    return ops


def _mla_ops(model: ModelSpec, r: RankShape, b: int, wb: float, kb: int) -> list[OpCost]:
    """Multi-head latent attention as vLLM runs it (DeepSeek-V2 paper, arXiv 2405.04434, §2.1).

    Prefill decompresses the cached latent of every attended token through
    ``kv_b_proj`` and attends with ``nope + rope`` query/key and ``v``
    value dimensions; decode absorbs ``kv_b_proj`` into the query and the
    output (per token) and attends over the ``kv_lora_rank + rope`` latent.
    The latent is the same for every head, so each TP rank reads all of it.
    """
    h, heads = r.hidden, r.heads
    ql, kl, rope = model.q_lora_rank, model.kv_lora_rank, model.qk_rope_head_dim
    nope, v = model.qk_nope_head_dim, model.v_head_dim
    qk = nope + rope
    latent = kl + rope
    # q_a + kv_a (one fused replicated GEMM), then q_b (column-parallel); no q_a without q_lora_rank
    a_width = (ql if ql else heads * qk) + latent
    pre_w = h * a_width + (ql * heads * qk if ql else 0)
    pre_f = 2 * pre_w
    kv_b = kl * heads * (nope + v)  # kv_b_proj weights on this rank
    return [
        OpCost.make(
            "attn_pre_proj",
            "gemm",
            {"tokens": pre_f},
            {"one": (pre_w + kv_b) * wb, "tokens": (h + a_width + (heads * qk if ql else 0)) * b},
        ),
        OpCost.make(
            "attn_latent_norm", "elementwise", {"tokens": 5 * (ql + kl)}, {"one": (ql + kl) * b, "tokens": 2 * (ql + kl) * b}
        ),
        OpCost.make("attn_rope", "elementwise", {"tokens": 3 * (heads + 1) * rope}, {"tokens": (2 * (heads + 1) + 1) * rope * b}),
        OpCost.make("attn_kv_cache_save", "elementwise", {}, {"tokens": latent * (b + kb)}),
        OpCost.make(
            "attn_prefill",
            "attn_prefill",
            # scores (qk) and weighted values (v) per query-key pair; kv_b over every attended latent
            {"prefill_work": 2 * heads * (qk + v), "prefill_kv": 2 * kv_b},
            {"prefill_tokens": heads * (qk + v) * b, "prefill_kv": latent * kb + heads * (qk + v) * b},
        ),
        OpCost.make(
            "attn_decode",
            "attn_decode",
            # scores over the latent (kl + rope) and values in the latent (kl) per entry; absorption per token
            {"decode_kv": 2 * heads * (latent + kl), "num_decode": 2 * heads * kl * (nope + v)},
            {"num_decode": heads * (qk + v) * b, "decode_kv": latent * kb},
        ),
        OpCost.make(
            "attn_post_proj",
            "gemm",
            {"tokens": 2 * heads * v * h},
            {"one": heads * v * h * wb, "tokens": (heads * v + h) * b},
        ),
    ]


def moe_ops(model: ModelSpec, tp: int) -> list[OpCost]:
    """A MoE MLP on one GPU: router, top-k, token permutation, routed experts, shared experts.

    Routed experts run ``assigned`` tokens (the busiest rank's) and read the
    weights of ``experts`` experts. A single expert needs no router, top-k
    or permutation: it prices exactly as the dense MLP of its width.
    """
    r = rank_shape(model, tp)
    b = model.dtype_bytes
    h, e = r.hidden, model.num_experts
    ops = []
    if e > 1:
        ops += [
            OpCost.make(
                "moe_router",
                "gemm",
                {"tokens": 2 * h * e},
                {"one": model.router_params() * b, "tokens": (h + e) * b},
            ),
            OpCost.make(
                "moe_topk", "elementwise", {"tokens": 5 * e}, {"tokens": e * 4 + model.experts_per_token * 8}
            ),
            # gather tokens into expert order, then scatter back with the routing weights
            OpCost.make("moe_permute", "elementwise", {"assigned": 2 * h}, {"assigned": 4 * h * b}),
        ]
    ops += _mlp_ops(model, "moe", r.expert_width, model.expert_bytes, "assigned", "experts")
    if r.shared_width:
        ops += _mlp_ops(model, "shared", r.shared_width, model.weight_bytes)
    return ops


def layer_ops(
    model: ModelSpec, tp: int, kv_dtype_bytes: int | None = None, *, moe: bool = False
) -> tuple[OpCost, ...]:
    """The operators of one dense (or MoE) decoder layer on one GPU (communication excluded).

    Names follow Vidur's profiles where they exist (``attn_pre_proj``,
    ``mlp_up_proj`` ...); ``add`` runs twice per layer (two residual adds).
    """
    r = rank_shape(model, tp)
    b = model.dtype_bytes
    h = r.hidden
    norm_w = model.norm_params * b
    ops = [OpCost.make("input_layernorm", "elementwise", {"tokens": 5 * h}, {"one": norm_w, "tokens": 2 * h * b})]
    ops += attention_ops(model, tp, kv_dtype_bytes)
    if not model.parallel_attn_mlp:
        ops.append(
            OpCost.make(
                "post_attention_layernorm", "elementwise", {"tokens": 5 * h}, {"one": norm_w, "tokens": 2 * h * b}
            )
        )
    if moe:
        ops += moe_ops(model, tp)
    else:
        ops += _mlp_ops(model, "mlp", r.intermediate, model.weight_bytes)
    ops.append(OpCost.make("add", "elementwise", {"tokens": h}, {"tokens": 3 * h * b}, count=2))
    return tuple(ops)


def embed_ops(model: ModelSpec, tp: int) -> tuple[OpCost, ...]:
    """Embedding lookup on the first stage (its vocab-parallel all-reduce excluded)."""
    b = model.dtype_bytes
    return (OpCost.make("emb", "elementwise", {}, {"tokens": 2 * model.hidden_size * b + 8}),)


def head_ops(model: ModelSpec, tp: int) -> tuple[OpCost, ...]:
    """Final norm, LM head and sampling on the last stage, per sequence (logit gather excluded)."""
    r = rank_shape(model, tp)
    b = model.dtype_bytes
    h = r.hidden
    return (
        OpCost.make("final_norm", "elementwise", {"seqs": 5 * h}, {"one": model.norm_params * b, "seqs": 2 * h * b}),
        OpCost.make(
            "lm_head",
            "gemm",
            {"seqs": 2 * h * r.vocab},
            {
                "one": (h * r.vocab + (r.vocab if model.lm_head_bias else 0)) * b,
                "seqs": h * b + r.vocab * LOGIT_BYTES,
            },
        ),
        OpCost.make("sampling", "elementwise", {"seqs": 5 * model.vocab_size}, {"seqs": 3 * model.vocab_size * LOGIT_BYTES}),
    )


def window_values(values: Mapping[str, object], window: int, num_prefill=None) -> dict[str, object]:
    """The attention aggregates of a sliding-window layer: each query attends at most ``window`` keys.

    Exact per request, the bounds are applied to the batch sums
    (Σ min(x_i, w) ≤ min(Σ x_i, n·w)): exact when every request is inside
    (or every one past) the window, an upper bound on the work in between.
    ``num_prefill`` defaults to ``seqs − num_decode``.
    """
    out = dict(values)
    nd = values["num_decode"]
    npf = values["seqs"] - nd if num_prefill is None else num_prefill
    out["decode_kv"] = np.minimum(values["decode_kv"], nd * window)
    out["prefill_work"] = np.minimum(values["prefill_work"], values["prefill_tokens"] * window)
    out["prefill_kv"] = np.minimum(values["prefill_kv"], npf * window + values["prefill_tokens"])
    return out


# -- vectorised totals ----------------------------------------------------------


def _values(
    num_tokens, prefill_work, decode_kv, num_seqs, prefill_tokens=None, prefill_kv=None, num_decode=None
) -> dict[str, np.ndarray]:
    tokens = np.asarray(num_tokens, dtype=float)
    nd = np.zeros_like(tokens) if num_decode is None else np.asarray(num_decode, dtype=float)
    pt = tokens - nd if prefill_tokens is None else np.asarray(prefill_tokens, dtype=float)
    pkv = pt if prefill_kv is None else np.asarray(prefill_kv, dtype=float)
    return {
        "one": np.ones_like(tokens),
        "tokens": tokens,
        "prefill_tokens": pt,
        "prefill_work": np.asarray(prefill_work, dtype=float),
        "prefill_kv": pkv,
        "num_decode": nd,
        "decode_kv": np.asarray(decode_kv, dtype=float),
        "seqs": np.asarray(num_seqs, dtype=float),
    }


def _total(ops: Iterable[OpCost], values: Mapping[str, np.ndarray], which: int) -> np.ndarray:
    out = np.zeros_like(values["tokens"])
    for op in ops:
        for var, c in op.flops if which == 0 else op.bytes:
            out = out + op.count * c * values[var]
    return out


def _per_gpu(model: ModelSpec, tp: int, pp: int, kv_dtype_bytes, values, which: int) -> np.ndarray:
    assigned, experts = routing_values(model, values["tokens"])
    values = {**values, "assigned": assigned, "experts": experts}
    attention = ("attn_prefill", "attn_decode")
    total = np.zeros_like(values["tokens"])
    for kind in layer_kinds(model):
        ops = [op for op in layer_ops(model, tp, kv_dtype_bytes, moe=kind.moe) if op.kind not in attention]
        total = total + kind.count * _total(ops, values, which)
    att = [op for op in attention_ops(model, tp, kv_dtype_bytes) if op.kind in attention]
    total = total + model.num_full_layers * _total(att, values, which)
    if model.num_window_layers:
        total = total + model.num_window_layers * _total(att, window_values(values, model.sliding_window), which)
    rest = _total(embed_ops(model, tp), values, which) + _total(head_ops(model, tp), values, which)
    # an empty batch runs no kernels (and reads no weights)
    return np.where(values["tokens"] > 0, (total + rest) / pp, 0.0)


def batch_flops(
    model: ModelSpec,
    tp: int,
    num_tokens,
    prefill_work,
    decode_kv,
    num_seqs,
    *,
    pp: int = 1,
    kv_dtype_bytes: int | None = None,
) -> np.ndarray:
    """FLOPs of one forward pass per GPU (average over the ``pp`` stages), per batch.

    Arguments are arrays (or scalars) of per-batch aggregates. Divide by the
    batch time and the device's peak FLOP/s for MFU.
    """
    values = _values(num_tokens, prefill_work, decode_kv, num_seqs)
    return _per_gpu(model, tp, pp, kv_dtype_bytes, values, 0)


def batch_bytes(
    model: ModelSpec,
    tp: int,
    num_tokens,
    prefill_work,
    decode_kv,
    num_seqs,
    *,
    pp: int = 1,
    prefill_tokens=None,
    prefill_kv=None,
    num_decode=None,
    kv_dtype_bytes: int | None = None,
) -> np.ndarray:
    """HBM bytes moved by one forward pass per GPU (average over stages), per batch.

    Weights are read once per batch, KV bytes by the attention context.
    ``prefill_tokens`` defaults to ``num_tokens − num_decode``, ``prefill_kv``
    to ``prefill_tokens`` and ``num_decode`` to 0 when not recorded (small
    terms). Divide by batch time and HBM bandwidth for MBU.
    """
    values = _values(num_tokens, prefill_work, decode_kv, num_seqs, prefill_tokens, prefill_kv, num_decode)
    return _per_gpu(model, tp, pp, kv_dtype_bytes, values, 1)
