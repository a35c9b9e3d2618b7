"""Model architecture specs, from Hugging Face ``config.json`` fields."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from vidur.errors import VidurError

_NORMS = ("rmsnorm", "layernorm")


#: bytes per weight element by weight dtype. Quantized formats include their
#: scales: FP8 with 128x128 block scales in fp32 (DeepSeek-V3's checkpoint,
#: ``weight_block_size: [128, 128]``), INT4 with one fp16 scale per group of
#: 128 (GPTQ/AWQ's usual group size), MXFP4 with one 8-bit scale per block of
#: 32 (OCP Microscaling spec v1.0; gpt-oss's experts).
WEIGHT_DTYPE_BYTES = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0 + 4.0 / (128 * 128),
    "int4": 0.5 + 2.0 / 128,
    "mxfp4": 0.5 + 1.0 / 32,
}
#: weight dtypes a scenario may ask for (``auto``: the checkpoint's)
WEIGHT_DTYPES = ("auto",) + tuple(WEIGHT_DTYPE_BYTES)
#: bytes per KV-cache element by KV dtype (vLLM ``--kv-cache-dtype``)
KV_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@attrs.frozen
class ModelSpec:
    """A decoder-only transformer's shape: dense (Llama family and friends),
    mixture-of-experts, multi-head latent attention, sliding-window layers.

    ``name`` is the Hugging Face id, ``architecture`` the config's
    ``architectures[0]``. Sizes are for the whole model; the memory planner
    and estimators shard them by TP/PP/EP.

    Bias flags: ``attention_bias`` is a bias on the Q/K/V projections
    (Qwen2, Qwen-1, phi-2, gpt-oss), ``output_bias`` on the attention output
    projection, ``mlp_bias`` on the MLP (and expert) projections,
    ``lm_head_bias`` on the LM head (phi-2 has all four).
    ``partial_rotary_factor`` is the fraction of each head's dimensions that
    get rotary embeddings (phi-2: 0.4). ``qk_norm``: an RMSNorm over each
    query and key head (Qwen3).

    Sliding windows: ``num_window_layers`` of the layers attend only to the
    last ``sliding_window`` tokens (Mistral-7B-v0.1: all 32 at 4096;
    gpt-oss: every other layer at 128).

    Mixture of experts (``num_experts`` > 0): every layer after the first
    ``num_dense_layers`` replaces its MLP by a router over ``num_experts``
    experts of width ``moe_intermediate_size``, ``experts_per_token`` of them
    per token, plus an always-active shared MLP of width
    ``shared_expert_intermediate_size`` (0: none). Dense layers use
    ``intermediate_size``.

    Multi-head latent attention (``kv_lora_rank`` > 0, DeepSeek-V2/V3):
    queries through a ``q_lora_rank`` bottleneck (0: a plain projection),
    keys and values compressed to ``kv_lora_rank`` plus a shared rotary key
    of ``qk_rope_head_dim``; heads have ``qk_nope_head_dim + qk_rope_head_dim``
    query/key dimensions and ``v_head_dim`` value dimensions. The KV cache
    holds the compressed ``kv_lora_rank + qk_rope_head_dim`` per token per layer.

    Precision: ``dtype_bytes`` is the activations', embeddings' and norms'
    element size and the default KV element size (``kv_dtype_bytes`` 0);
    ``weight_dtype`` is that of the attention and dense/shared MLP linear
    layers, ``expert_weight_dtype`` that of the routed experts
    (:data:`WEIGHT_DTYPE_BYTES`; ``auto``: ``dtype_bytes``, and for the
    experts the other linear layers' dtype).

    Deployment: the scenario's ``cluster`` settings that change what a
    model costs (``weight_dtype``, ``kv_cache_dtype``, ``expert_parallel``)
    are applied to the spec (:func:`vidur.model.catalog.deploy`), so every
    planner and estimator sees the model as deployed. ``expert_parallel``
    is the EP degree of the MoE layers: the routed experts are split over
    ``expert_parallel`` ranks of the TP group, each expert's width over the
    remaining ``tp / expert_parallel`` (1: experts tensor-parallel, vLLM's
    default; ``tp``: whole experts per GPU, vLLM's ``--enable-expert-parallel``).
    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    gated_mlp: bool = True  # SwiGLU-style gate/up/down MLP; False: up/down only
    norm: str = "rmsnorm"  # or "layernorm"
    activation: str = "silu"
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    parallel_attn_mlp: bool = False  # phi-2 style parallel residual
    rope_theta: float = 10000.0
    dtype_bytes: int = 2  # bf16/fp16 activations (and KV unless kv_dtype_bytes)
    output_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    partial_rotary_factor: float = 1.0
    architecture: str = "LlamaForCausalLM"
    qk_norm: bool = False
    sliding_window: int = 0
    num_window_layers: int = 0
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    num_dense_layers: int = 0
    router_bias: bool = False
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    weight_dtype: str = "auto"
    expert_weight_dtype: str = "auto"
    kv_dtype_bytes: int = 0
    expert_parallel: int = 1

    def __attrs_post_init__(self) -> None:
        who = self.name or "model"
        for field in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
            "max_position_embeddings",
            "dtype_bytes",
        ):
            value = getattr(self, field)
            if not _positive_int(value):
                raise VidurError(f"{who}: {field} must be a positive integer, got {value!r}; fix the model config")
        for field in (
            "sliding_window", "num_window_layers", "num_experts", "experts_per_token", "moe_intermediate_size",
            "shared_expert_intermediate_size", "num_dense_layers", "kv_lora_rank", "q_lora_rank",
            "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "kv_dtype_bytes",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise VidurError(f"{who}: {field} must be a non-negative integer, got {value!r}; fix the model config")
        if not _positive_int(self.expert_parallel):
            raise VidurError(f"{who}: expert_parallel must be a positive integer, got {self.expert_parallel!r}")
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise VidurError(
                f"{who}: num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads}); fix the model config"
            )
        if self.norm not in _NORMS:
            raise VidurError(f"{who}: norm must be one of {', '.join(_NORMS)}, got {self.norm!r}")
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise VidurError(
                f"{who}: partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor!r}"
            )
        for field in ("weight_dtype", "expert_weight_dtype"):
            if getattr(self, field) not in WEIGHT_DTYPES:
                raise VidurError(
                    f"{who}: {field} must be one of {', '.join(WEIGHT_DTYPES)}, got {getattr(self, field)!r}"
                )
        if self.num_window_layers > self.num_layers or (self.num_window_layers > 0) != (self.sliding_window > 0):
            raise VidurError(
                f"{who}: sliding_window ({self.sliding_window}) and its layer count ({self.num_window_layers}) "
                f"must both be set (at most {self.num_layers} layers) or both be 0"
            )
        if self.num_experts:
            if not 0 < self.experts_per_token <= self.num_experts or not self.moe_intermediate_size:
                raise VidurError(
                    f"{who}: a mixture of experts needs 1 <= experts per token ({self.experts_per_token}) <= "
                    f"experts ({self.num_experts}) and a positive moe_intermediate_size; fix the model config"
                )
            if self.num_dense_layers >= self.num_layers:
                raise VidurError(f"{who}: {self.num_dense_layers} dense layers leave no MoE layer of {self.num_layers}")
        if self.kv_lora_rank and not (self.qk_rope_head_dim and self.qk_nope_head_dim and self.v_head_dim):
            raise VidurError(
                f"{who}: multi-head latent attention needs qk_rope_head_dim, qk_nope_head_dim and v_head_dim; "
                f"fix the model config"
            )

    # -- shape ---------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        """True for a mixture of experts."""
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        """True for multi-head latent attention (DeepSeek-V2/V3)."""
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        """Decoder layers whose MLP is a mixture of experts."""
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def num_full_layers(self) -> int:
        """Decoder layers with full (not sliding-window) attention."""
        return self.num_layers - self.num_window_layers

    @property
    def q_size(self) -> int:
        """Width of the query projection: heads × head_dim (MLA: × (nope + rope) dims)."""
        if self.is_mla:
            return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the key (or value) projection: KV heads × head_dim."""
        return self.num_kv_heads * self.head_dim

    @property
    def attn_out_size(self) -> int:
        """Width of the attention output entering the output projection."""
        return self.num_heads * (self.v_head_dim if self.is_mla else self.head_dim)

    @property
    def short_name(self) -> str:
        """The name without its organisation (``Llama-2-7b-hf``)."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def norms_per_layer(self) -> int:
        """Normalisation layers per decoder layer (1 with a parallel attention/MLP block)."""
        return 1 if self.parallel_attn_mlp else 2

    @property
    def norm_params(self) -> int:
        """Weights of one norm: scale (and bias for LayerNorm)."""
        return self.hidden_size * (2 if self.norm == "layernorm" else 1)

    @property
    def weight_bytes(self) -> float:
        """Bytes per element of the attention and dense/shared MLP weights (``auto``: ``dtype_bytes``)."""
        return float(self.dtype_bytes) if self.weight_dtype == "auto" else WEIGHT_DTYPE_BYTES[self.weight_dtype]

    @property
    def expert_bytes(self) -> float:
        """Bytes per element of the routed experts' weights (``auto``: as the other linear layers)."""
        if self.expert_weight_dtype == "auto":
            return self.weight_bytes
        return WEIGHT_DTYPE_BYTES[self.expert_weight_dtype]

    @property
    def kv_bytes(self) -> int:
        """Bytes per KV-cache element (``kv_dtype_bytes``, else ``dtype_bytes``)."""
        return self.kv_dtype_bytes or self.dtype_bytes

    # -- parameter counts (unsharded) ------------------------------------------
    def attention_params(self) -> int:
        """Linear weights (and biases) of one layer's attention block."""
        h = self.hidden_size
        if self.is_mla:
            heads = self.num_heads
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank * heads * qk
            else:
                q = h * heads * qk
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * heads * (
                self.qk_nope_head_dim + self.v_head_dim
            )
            return q + kv + self.attn_out_size * h
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        if self.attention_bias:
            attn += self.q_size + 2 * self.kv_size
        if self.output_bias:
            attn += h
        return attn

    def attention_norm_params(self) -> int:
        """Norm weights inside attention: qk-norm (Qwen3) or MLA's latent norms."""
        if self.is_mla:
            return self.kv_lora_rank + self.q_lora_rank
        return 2 * self.head_dim if self.qk_norm else 0

    def mlp_params(self, width: int) -> int:
        """Weights (and biases) of one gated or plain MLP of ``width``."""
        h = self.hidden_size
        n_in = 2 if self.gated_mlp else 1
        p = (n_in + 1) * h * width
        if self.mlp_bias:
            p += n_in * width + h
        return p

    def router_params(self) -> int:
        """The router's weights (and bias) of one MoE layer (none for a single expert: nothing to route)."""
        if self.num_experts == 1:
            return 0
        return self.hidden_size * self.num_experts + (self.num_experts if self.router_bias else 0)

    def layer_params(self, moe: bool) -> tuple[int, int, int]:
        """(high-precision, linear, expert) weights of one dense or MoE layer.

        High-precision: norms and the router (kept in the activation dtype);
        linear: attention and the dense or shared MLP (``weight_dtype``);
        expert: the routed experts (``expert_weight_dtype``).
        """
        hp = self.norms_per_layer * self.norm_params + self.attention_norm_params()
        lin = self.attention_params()
        experts = 0
        if moe:
            hp += self.router_params()
            experts = self.num_experts * self.mlp_params(self.moe_intermediate_size)
            if self.shared_expert_intermediate_size:
                lin += self.mlp_params(self.shared_expert_intermediate_size)
        else:
            lin += self.mlp_params(self.intermediate_size)
        return hp, lin, experts

    def params_per_layer(self) -> int:
        """Weights of one decoder layer (attention + MLP + norms, biases included); the mean over layers for MoE."""
        total = self.num_dense_layers_or_all() * sum(self.layer_params(False)) + self.num_moe_layers * sum(
            self.layer_params(True)
        )
        return total // self.num_layers

    def num_dense_layers_or_all(self) -> int:
        """Layers with a dense MLP (all of them for a dense model)."""
        return self.num_dense_layers if self.is_moe else self.num_layers

    def _embedding_params(self) -> int:
        emb = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else emb
        if self.lm_head_bias:
            head += self.vocab_size
        return emb + head + self.norm_params

    def num_params(self) -> int:
        """Total weights: embeddings, layers, final norm, LM head."""
        dense = self.num_dense_layers_or_all() * sum(self.layer_params(False))
        moe = self.num_moe_layers * sum(self.layer_params(True))
        return self._embedding_params() + dense + moe

    def active_params(self) -> int:
        """Weights one token uses: all but the routed experts it is not sent to."""
        total = self.num_params()
        if self.is_moe:
            idle = self.num_experts - self.experts_per_token
            total -= self.num_moe_layers * idle * self.mlp_params(self.moe_intermediate_size)
        return total

    def weights_bytes(self) -> int:
        """Bytes of all weights, each group at its dtype."""
        total = self._embedding_params() * self.dtype_bytes
        for count, moe in ((self.num_dense_layers_or_all(), False), (self.num_moe_layers, True)):
            hp, lin, experts = self.layer_params(moe)
            total += count * (hp * self.dtype_bytes + lin * self.weight_bytes + experts * self.expert_bytes)
        return int(round(total))

    def kv_elements_per_layer(self) -> int:
        """KV-cache elements one token stores in one layer (unsharded).

        Standard attention: keys and values, 2 × KV heads × head_dim; MLA:
        the compressed latent plus the rotary key, ``kv_lora_rank + qk_rope_head_dim``.
        """
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_size

    def kv_bytes_per_token(self, kv_dtype_bytes: int | None = None) -> int:
        """KV-cache bytes one token takes across all layers (unsharded, sliding windows not bounded)."""
        b = self.kv_bytes if kv_dtype_bytes is None else kv_dtype_bytes
        return self.num_layers * self.kv_elements_per_layer() * b

    # -- construction from Hugging Face configs ---------------------------
    @classmethod
    def from_hf_config(cls, name: str, config: Mapping[str, Any]) -> "ModelSpec":
        """Build a spec from a Hugging Face ``config.json`` dictionary.

        The parsing, the supported ``architectures`` and the refusal of
        fields whose cost is not modelled live in :mod:`vidur.model.hf_config`.
        """
        from vidur.model.hf_config import spec_from_hf_config

        return spec_from_hf_config(cls, name, config)
