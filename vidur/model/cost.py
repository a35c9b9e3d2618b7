"""Analytical FLOPs, bytes and weight shards of a model on one TP rank.

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
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import attrs
import numpy as np

from vidur.model.catalog import kv_heads_per_rank
from vidur.model.spec import ModelSpec

VARS = ("one", "tokens", "prefill_tokens", "prefill_work", "prefill_kv", "num_decode", "decode_kv", "seqs")

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
    """Per-rank dimensions of a model split ``tp`` ways."""

    hidden: int
    heads: int  # attention heads on this rank
    kv_heads: int  # KV heads on this rank (replicated when tp > kv heads)
    head_dim: int
    intermediate: int  # MLP width on this rank
    vocab: int  # vocabulary rows on this rank (vocab-parallel)

    @property
    def q_size(self) -> int:
        """Query width on this rank."""
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Key (or value) width on this rank."""
        return self.kv_heads * self.head_dim


def rank_shape(model: ModelSpec, tp: int) -> RankShape:
    """Per-rank dimensions for tensor parallelism ``tp``."""
    return RankShape(
        hidden=model.hidden_size,
        heads=model.num_heads // tp,
        kv_heads=kv_heads_per_rank(model, tp),
        head_dim=model.head_dim,
        intermediate=math.ceil(model.intermediate_size / tp),
        vocab=math.ceil(model.vocab_size / tp),
    )


# -- weights and KV bytes of a shard ------------------------------------------


def layer_params_per_rank(model: ModelSpec, tp: int) -> int:
    """Weights of one decoder layer held by one TP rank (norms and output/MLP-out biases replicated)."""
    r = rank_shape(model, tp)
    h = r.hidden
    qkv = h * (r.q_size + 2 * r.kv_size) + (r.q_size + 2 * r.kv_size if model.attention_bias else 0)
    out = r.q_size * h + (h if model.output_bias else 0)
    n_up = (2 if model.gated_mlp else 1) * r.intermediate
    mlp = h * n_up + r.intermediate * h + ((n_up + h) if model.mlp_bias else 0)
    return qkv + out + mlp + model.norms_per_layer * model.norm_params + model.attention_norm_params()


def stage_weights_bytes(model: ModelSpec, tp: int, pp: int, stage: int) -> int:
    """Weight bytes on one GPU of pipeline stage ``stage`` (0-based) at ``tp`` × ``pp``.

    Stage 0 holds the embedding, the last stage the final norm and LM head
    (a separate copy when tied embeddings are split across stages).
    """
    r = rank_shape(model, tp)
    params = (model.num_layers // pp) * layer_params_per_rank(model, tp)
    if stage == 0:
        params += r.vocab * r.hidden
    if stage == pp - 1:
        params += model.norm_params
        if not (model.tie_word_embeddings and pp == 1):
            params += r.vocab * r.hidden
        if model.lm_head_bias:
            params += r.vocab
    return params * model.dtype_bytes


def max_stage_weights_bytes(model: ModelSpec, tp: int, pp: int) -> int:
    """Weight bytes per GPU of the heaviest pipeline stage."""
    return max(stage_weights_bytes(model, tp, pp, s) for s in {0, pp - 1})


def kv_bytes_per_token(model: ModelSpec, tp: int, pp: int, kv_dtype_bytes: int | None = None) -> int:
    """KV-cache bytes one token takes on one GPU: 2 × (layers of a stage) × (KV heads of a rank) × head_dim × bytes."""
    b = model.dtype_bytes if kv_dtype_bytes is None else kv_dtype_bytes
    return 2 * (model.num_layers // pp) * kv_heads_per_rank(model, tp) * model.head_dim * b


# -- operator tables -----------------------------------------------------------


def layer_ops(model: ModelSpec, tp: int, kv_dtype_bytes: int | None = None) -> tuple[OpCost, ...]:
    """The operators of one decoder layer on one TP rank (communication excluded).

    Names follow Vidur's profiles where they exist (``attn_pre_proj``,
    ``mlp_up_proj`` ...); ``add`` runs twice per layer (two residual adds).
    """
    r = rank_shape(model, tp)
    b = model.dtype_bytes
    kb = model.dtype_bytes if kv_dtype_bytes is None else kv_dtype_bytes
    h, d, qs, kvs, inter = r.hidden, r.head_dim, r.q_size, r.kv_size, r.intermediate
    qkv = qs + 2 * kvs
    norm_w = model.norm_params * b
    rot = model.partial_rotary_factor
    n_up = (2 if model.gated_mlp else 1) * inter
    ops = [
        OpCost.make("input_layernorm", "elementwise", {"tokens": 5 * h}, {"one": norm_w, "tokens": 2 * h * b}),
        OpCost.make(
            "attn_pre_proj",
            "gemm",
            {"tokens": 2 * h * qkv},
            {"one": (h * qkv + (qkv if model.attention_bias else 0)) * b, "tokens": (h + qkv) * b},
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
            {"one": (qs * h + (h if model.output_bias else 0)) * b, "tokens": (qs + h) * b},
        ),
    ]
    if not model.parallel_attn_mlp:
        ops.append(
            OpCost.make(
                "post_attention_layernorm", "elementwise", {"tokens": 5 * h}, {"one": norm_w, "tokens": 2 * h * b}
            )
        )
    ops += [
        OpCost.make(
            "mlp_up_proj",
            "gemm",
            {"tokens": 2 * h * n_up},
            {"one": (h * n_up + (n_up if model.mlp_bias else 0)) * b, "tokens": (h + n_up) * b},
        ),
        OpCost.make(
            "mlp_act",
            "elementwise",
            {"tokens": (5 if model.gated_mlp else 8) * inter},
            {"tokens": (n_up + inter) * b},
        ),
        OpCost.make(
            "mlp_down_proj",
            "gemm",
            {"tokens": 2 * inter * h},
            {"one": (inter * h + (h if model.mlp_bias else 0)) * b, "tokens": (inter + h) * b},
        ),
        OpCost.make("add", "elementwise", {"tokens": h}, {"tokens": 3 * h * b}, count=2),
    ]
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
    layer = _total(layer_ops(model, tp, kv_dtype_bytes), values, which)
    rest = _total(embed_ops(model, tp), values, which) + _total(head_ops(model, tp), values, which)
    # an empty batch runs no kernels (and reads no weights)
    return np.where(values["tokens"] > 0, (model.num_layers * layer + rest) / pp, 0.0)


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
