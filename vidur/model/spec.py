"""Model architecture specs, from Hugging Face ``config.json`` fields."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from vidur.errors import VidurError

_NORMS = ("rmsnorm", "layernorm")
#: model types with a plain (non-gated) GELU MLP, LayerNorm and biases
_GPT_STYLE = ("gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt", "starcoder2")


@attrs.frozen
class ModelSpec:
    """A decoder-only transformer's shape (Llama family and friends).

    ``name`` is the Hugging Face id. Sizes are for the whole model; the
    memory planner and estimators shard them by TP/PP.

    Bias flags: ``attention_bias`` is a bias on the Q/K/V projections
    (Qwen2, Qwen-1, phi-2), ``output_bias`` on the attention output
    projection, ``mlp_bias`` on the MLP projections, ``lm_head_bias`` on the
    LM head (phi-2 has all four). ``partial_rotary_factor`` is the fraction
    of each head's dimensions that get rotary embeddings (phi-2: 0.4).
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
    dtype_bytes: int = 2  # bf16/fp16 weights and KV
    output_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    partial_rotary_factor: float = 1.0

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
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise VidurError(f"{who}: {field} must be a positive integer, got {value!r}; fix the model config")
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

    @property
    def q_size(self) -> int:
        """Width of the query projection: heads × head_dim."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the key (or value) projection: KV heads × head_dim."""
        return self.num_kv_heads * self.head_dim

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

    def params_per_layer(self) -> int:
        """Weights of one decoder layer (attention + MLP + norms, biases included)."""
        h = self.hidden_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        if self.attention_bias:
            attn += self.q_size + 2 * self.kv_size
        if self.output_bias:
            attn += h
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate_size
        if self.mlp_bias:
            mlp += (2 if self.gated_mlp else 1) * self.intermediate_size + h
        return attn + mlp + self.norms_per_layer * self.norm_params

    def num_params(self) -> int:
        """Total weights: embeddings, layers, final norm, LM head."""
        emb = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else emb
        if self.lm_head_bias:
            head += self.vocab_size
        return emb + head + self.num_layers * self.params_per_layer() + self.norm_params

    def weights_bytes(self) -> int:
        """Bytes of all weights at ``dtype_bytes`` per parameter."""
        return self.num_params() * self.dtype_bytes

    def kv_bytes_per_token(self, kv_dtype_bytes: int | None = None) -> int:
        """KV-cache bytes one token takes across all layers (unsharded)."""
        b = self.dtype_bytes if kv_dtype_bytes is None else kv_dtype_bytes
        return 2 * self.num_layers * self.kv_size * b

    # -- construction from Hugging Face configs ---------------------------
    @classmethod
    def from_hf_config(cls, name: str, config: Mapping[str, Any]) -> "ModelSpec":
        """Build a spec from a Hugging Face ``config.json`` dictionary.

        Understands Llama/Mistral/Qwen2/InternLM style fields, Qwen-1
        (``kv_channels``, ``intermediate_size`` counting both MLP halves,
        ``rotary_emb_base``) and phi (LayerNorm, GELU, non-gated MLP, partial
        rotary, parallel attention/MLP, biases). Missing or inconsistent
        fields raise :class:`VidurError` naming the model.
        """
        if not isinstance(config, Mapping):
            raise VidurError(f"{name}: a model config must be a JSON object, got {type(config).__name__}")
        cfg = dict(config)
        # some multimodal/wrapped configs nest the text model
        if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
            cfg = {**cfg, **cfg["text_config"]}
        model_type = str(cfg.get("model_type", "llama")).lower()

        def need(*keys: str) -> Any:
            for key in keys:
                if cfg.get(key) is not None:
                    return cfg[key]
            raise VidurError(f"{name}: config has no {' / '.join(keys)}; is this a Hugging Face decoder config.json?")

        def as_int(key_value: Any, what: str) -> int:
            if isinstance(key_value, bool) or not isinstance(key_value, (int, float)) or int(key_value) != key_value:
                raise VidurError(f"{name}: {what} must be an integer, got {key_value!r}")
            return int(key_value)

        hidden = as_int(need("hidden_size", "n_embd", "d_model"), "hidden_size")
        heads = as_int(need("num_attention_heads", "n_head"), "num_attention_heads")
        layers = as_int(need("num_hidden_layers", "n_layer", "num_layers"), "num_hidden_layers")
        vocab = as_int(need("vocab_size", "padded_vocab_size"), "vocab_size")
        kv_heads = cfg.get("num_key_value_heads") or cfg.get("multi_query_group_num") or heads
        kv_heads = as_int(kv_heads, "num_key_value_heads")
        head_dim = cfg.get("head_dim") or cfg.get("kv_channels")
        if head_dim is None:
            if hidden % heads:
                raise VidurError(
                    f"{name}: hidden_size {hidden} is not divisible by num_attention_heads {heads} "
                    f"and the config gives no head_dim"
                )
            head_dim = hidden // heads
        head_dim = as_int(head_dim, "head_dim")
        inter = cfg.get("intermediate_size", cfg.get("n_inner", cfg.get("ffn_hidden_size")))
        if inter is None:
            inter = 4 * hidden
        inter = as_int(inter, "intermediate_size")
        max_pos = cfg.get("max_position_embeddings") or cfg.get("seq_length") or cfg.get("n_positions") or 2048
        max_pos = as_int(max_pos, "max_position_embeddings")

        rope_theta = cfg.get("rope_theta")
        if rope_theta is None:
            rope_theta = cfg.get("rotary_emb_base")
        if rope_theta is None and isinstance(cfg.get("rotary"), Mapping):
            rope_theta = cfg["rotary"].get("base")
        rope_theta = float(rope_theta if rope_theta is not None else 10000.0)

        activation = str(cfg.get("hidden_act", cfg.get("activation_function", "silu")))
        gated = True
        norm = "rmsnorm"
        parallel = False
        attention_bias = bool(cfg.get("attention_bias", False))
        output_bias = bool(cfg.get("attention_bias", False))
        mlp_bias = bool(cfg.get("mlp_bias", False))
        lm_head_bias = False
        partial_rotary = float(cfg.get("partial_rotary_factor", cfg.get("rotary_pct", 1.0)) or 1.0)

        if model_type == "qwen":  # Qwen-1: intermediate_size counts w1 and w2 together
            inter //= 2
            attention_bias = True  # c_attn has a bias, c_proj does not
            output_bias = False
        elif model_type in ("qwen2", "qwen2_moe"):
            attention_bias = True  # q/k/v biases, no o_proj bias
            output_bias = False
        elif model_type == "internlm":
            attention_bias = output_bias = bool(cfg.get("bias", False))
        elif model_type in ("phi", "phi-msft"):
            gated = False
            norm = "layernorm"
            parallel = True
            attention_bias = output_bias = mlp_bias = lm_head_bias = True
        elif model_type in _GPT_STYLE:
            gated = False
            norm = "layernorm"
            attention_bias = output_bias = mlp_bias = True

        return cls(
            name=name,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=inter,
            vocab_size=vocab,
            max_position_embeddings=max_pos,
            gated_mlp=gated,
            norm=norm,
            activation=activation,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=attention_bias,
            parallel_attn_mlp=parallel,
            rope_theta=rope_theta,
            output_bias=output_bias,
            mlp_bias=mlp_bias,
            lm_head_bias=lm_head_bias,
            partial_rotary_factor=partial_rotary,
        )
