"""Hugging Face ``config.json`` -> :class:`~vidur.model.spec.ModelSpec`, family by family.

A config is read by its ``architectures[0]`` (else its ``model_type``; a
config with neither is taken as Llama-shaped). Each supported architecture
maps to a family that knows which fields change the cost; anything else is
refused in one line naming what is supported, never priced as something
else. Fields that change the cost but that a family does not model
(experts on a dense family, MLA ranks, an unknown quantization method or
layer type) are refused the same way.

Families (``SUPPORTED``):

- dense: Llama, Mistral (sliding window on every layer), Qwen2 (biases,
  ``use_sliding_window`` from ``max_window_layers``), Qwen3 (qk-norm),
  Qwen-1, InternLM, phi (LayerNorm, GELU, parallel block, partial rotary);
- mixture of experts: Mixtral, Qwen3-MoE, DeepSeek-V3 (MLA, shared
  expert, dense first layers), gpt-oss (alternating sliding windows, MXFP4
  experts, biases).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from vidur.errors import VidurError

#: architectures[0] -> family key
SUPPORTED = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "QWenLMHeadModel": "qwen",
    "InternLMForCausalLM": "internlm",
    "PhiForCausalLM": "phi",
    "MixtralForCausalLM": "mixtral",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "GptOssForCausalLM": "gpt_oss",
}
#: model_type -> family key, for configs without ``architectures``
MODEL_TYPES = {family: family for family in SUPPORTED.values()} | {"phi-msft": "phi"}
MOE_FAMILIES = ("mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss")

#: fields that make a model a mixture of experts or give it latent attention
_MOE_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size", "n_shared_experts")
_MLA_FIELDS = ("kv_lora_rank", "q_lora_rank")
#: quantization_config.quant_method -> (linear weight dtype, expert weight dtype)
_QUANT = {"fp8": ("fp8", "fp8"), "mxfp4": ("auto", "mxfp4"), "gptq": ("int4", "int4"), "awq": ("int4", "int4")}
_LAYER_TYPES = ("full_attention", "sliding_attention")


def supported_list() -> str:
    """The supported architectures, comma-separated (for error messages)."""
    return ", ".join(sorted(SUPPORTED))


def _refuse(name: str, what: str) -> VidurError:
    return VidurError(f"{name}: {what}; vidur models {supported_list()}")


def _family(name: str, cfg: Mapping[str, Any]) -> str:
    archs = cfg.get("architectures")
    if archs:
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise VidurError(f"{name}: architectures must be a list of names, got {archs!r}")
        unknown = [a for a in archs if a not in SUPPORTED]
        if unknown:
            raise _refuse(name, f"architecture {unknown[0]} is not supported")
        return SUPPORTED[archs[0]]
    model_type = cfg.get("model_type")
    if model_type is None:
        return "llama"
    family = MODEL_TYPES.get(str(model_type).lower())
    if family is None:
        raise _refuse(name, f"model_type {model_type!r} is not supported")
    return family


def _set(cfg: Mapping[str, Any], key: str) -> bool:
    value = cfg.get(key)
    return value not in (None, 0, False, [], {})


def spec_from_hf_config(cls, name: str, config: Mapping[str, Any]):
    """Build ``cls`` (a ModelSpec) from a Hugging Face config dictionary (see the module docstring)."""
    if not isinstance(config, Mapping):
        raise VidurError(f"{name}: a model config must be a JSON object, got {type(config).__name__}")
    cfg = dict(config)
    # some multimodal/wrapped configs nest the text model
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), Mapping):
        cfg = {**cfg, **cfg["text_config"]}
    family = _family(name, cfg)

    def need(*keys: str) -> Any:
        for key in keys:
            if cfg.get(key) is not None:
                return cfg[key]
        raise VidurError(f"{name}: config has no {' / '.join(keys)}; is this a Hugging Face decoder config.json?")

    def as_int(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise VidurError(f"{name}: {what} must be an integer, got {value!r}")
        return int(value)

    def opt_int(key: str, default: int = 0) -> int:
        value = cfg.get(key)
        return default if value is None else as_int(value, key)

    # fields whose cost a dense family does not model
    if family not in MOE_FAMILIES:
        for key in _MOE_FIELDS:
            if _set(cfg, key) and not (key == "num_experts" and cfg[key] == 1):
                raise _refuse(name, f"{key}={cfg[key]!r} (a mixture of experts) is not modelled for {family}")
    if family != "deepseek_v3":
        for key in _MLA_FIELDS:
            if _set(cfg, key):
                raise _refuse(name, f"{key}={cfg[key]!r} (multi-head latent attention) is not modelled for {family}")

    hidden = as_int(need("hidden_size", "n_embd", "d_model"), "hidden_size")
    heads = as_int(need("num_attention_heads", "n_head"), "num_attention_heads")
    layers = as_int(need("num_hidden_layers", "n_layer", "num_layers"), "num_hidden_layers")
    vocab = as_int(need("vocab_size", "padded_vocab_size"), "vocab_size")
    kv_heads = as_int(cfg.get("num_key_value_heads") or cfg.get("multi_query_group_num") or heads, "num_key_value_heads")
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
    inter = as_int(4 * hidden if inter is None else inter, "intermediate_size")
    max_pos = as_int(
        cfg.get("max_position_embeddings") or cfg.get("seq_length") or cfg.get("n_positions") or 2048,
        "max_position_embeddings",
    )
    rope_theta = cfg.get("rope_theta")
    if rope_theta is None:
        rope_theta = cfg.get("rotary_emb_base")
    if rope_theta is None and isinstance(cfg.get("rotary"), Mapping):
        rope_theta = cfg["rotary"].get("base")

    fields: dict[str, Any] = dict(
        name=name,
        architecture=next((a for a, f in SUPPORTED.items() if f == family), family)
        if not cfg.get("architectures")
        else cfg["architectures"][0],
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        activation=str(cfg.get("hidden_act", cfg.get("activation_function", "silu"))),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(cfg.get("attention_bias", False)),
        output_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        rope_theta=float(rope_theta if rope_theta is not None else 10000.0),
        partial_rotary_factor=float(cfg.get("partial_rotary_factor", cfg.get("rotary_pct", 1.0)) or 1.0),
    )
    fields.update(_sliding_windows(name, family, cfg, layers, opt_int))
    fields.update(_quantization(name, cfg))
    FAMILIES[family](name, cfg, fields, opt_int)
    return cls(**fields)


def _sliding_windows(name: str, family: str, cfg: Mapping[str, Any], layers: int, opt_int) -> dict[str, int]:
    """``sliding_window`` and how many layers use it, from ``layer_types`` or the family's rule."""
    window = opt_int("sliding_window")
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise VidurError(f"{name}: layer_types must list one type per layer ({layers}), got {types!r}")
        bad = sorted({t for t in types if t not in _LAYER_TYPES})
        if bad:
            raise _refuse(name, f"layer type {bad[0]!r} is not modelled (modelled: {', '.join(_LAYER_TYPES)})")
        count = types.count("sliding_attention")
        if count and not window:
            raise VidurError(f"{name}: layer_types has sliding_attention layers but sliding_window is not set")
        return {"sliding_window": window if count else 0, "num_window_layers": count}
    if not window:
        return {}
    if family in ("qwen2", "qwen3", "qwen3_moe"):
        # Hugging Face Qwen2/Qwen3: layers from max_window_layers on slide, only with use_sliding_window
        if not cfg.get("use_sliding_window", False):
            return {}
        first = min(opt_int("max_window_layers", layers), layers)
        return {"sliding_window": window, "num_window_layers": layers - first} if first < layers else {}
    if family in ("mistral", "mixtral"):
        return {"sliding_window": window, "num_window_layers": layers}
    raise _refuse(name, f"sliding_window={window} is not modelled for {family}")


def _quantization(name: str, cfg: Mapping[str, Any]) -> dict[str, str]:
    """Weight dtypes from ``quantization_config`` (fp8, mxfp4 experts, 4-bit GPTQ/AWQ)."""
    q = cfg.get("quantization_config")
    if not q:
        return {}
    method = str(q.get("quant_method", "")).lower() if isinstance(q, Mapping) else ""
    if method not in _QUANT:
        raise _refuse(name, f"quantization method {method or q!r} is not modelled (modelled: {', '.join(_QUANT)})")
    if method in ("gptq", "awq") and q.get("bits", 4) != 4:
        raise _refuse(name, f"{method} with {q.get('bits')} bits is not modelled (4-bit only)")
    linear, experts = _QUANT[method]
    return {"weight_dtype": linear, "expert_weight_dtype": experts}


# -- families: each adjusts the generic fields ---------------------------------------


def _llama(name, cfg, f, opt_int) -> None:
    """Llama and Mistral: the generic fields as read."""


def _qwen(name, cfg, f, opt_int) -> None:
    """Qwen-1: ``intermediate_size`` counts w1 and w2 together; c_attn has a bias, c_proj none."""
    f["intermediate_size"] //= 2
    f["attention_bias"], f["output_bias"] = True, False


def _qwen2(name, cfg, f, opt_int) -> None:
    """Qwen2: q/k/v biases, no o_proj bias."""
    f["attention_bias"], f["output_bias"] = True, False


def _qwen3(name, cfg, f, opt_int) -> None:
    """Qwen3: an RMSNorm over each query and key head; biases only if ``attention_bias``."""
    f["qk_norm"] = True


def _internlm(name, cfg, f, opt_int) -> None:
    """InternLM: one ``bias`` flag for q/k/v and o_proj."""
    f["attention_bias"] = f["output_bias"] = bool(cfg.get("bias", False))


def _phi(name, cfg, f, opt_int) -> None:
    """phi: LayerNorm, plain GELU MLP, parallel attention/MLP, biases everywhere."""
    f.update(gated_mlp=False, norm="layernorm", parallel_attn_mlp=True)
    f["attention_bias"] = f["output_bias"] = f["mlp_bias"] = True
    f["lm_head_bias"] = True


def _moe_counts(name, cfg, f, opt_int, experts_key: str) -> None:
    f["num_experts"] = opt_int(experts_key)
    f["experts_per_token"] = opt_int("num_experts_per_tok", opt_int("experts_per_token"))
    if not f["num_experts"] or not f["experts_per_token"]:
        raise VidurError(f"{name}: a mixture-of-experts config needs {experts_key} and num_experts_per_tok")


def _mixtral(name, cfg, f, opt_int) -> None:
    """Mixtral: every layer a MoE of ``num_local_experts`` experts of ``intermediate_size``; no router bias."""
    _moe_counts(name, cfg, f, opt_int, "num_local_experts")
    f["moe_intermediate_size"] = f["intermediate_size"]


def _qwen3_moe(name, cfg, f, opt_int) -> None:
    """Qwen3-MoE: qk-norm; MoE layers every ``decoder_sparse_step`` except ``mlp_only_layers``; no shared expert."""
    _moe_counts(name, cfg, f, opt_int, "num_experts")
    f["qk_norm"] = True
    f["moe_intermediate_size"] = opt_int("moe_intermediate_size")
    step = opt_int("decoder_sparse_step", 1)
    only_mlp = set(cfg.get("mlp_only_layers") or ())
    layers = f["num_layers"]
    moe = [i for i in range(layers) if i not in only_mlp and step > 0 and (i + 1) % step == 0]
    f["num_dense_layers"] = layers - len(moe)
    if _set(cfg, "shared_expert_intermediate_size"):
        raise _refuse(name, "a Qwen shared expert (shared_expert_intermediate_size) is not modelled for qwen3_moe")


def _deepseek_v3(name, cfg, f, opt_int) -> None:
    """DeepSeek-V3: MLA; ``first_k_dense_replace`` dense layers; routed + ``n_shared_experts`` shared
    experts of ``moe_intermediate_size``; the router's score-correction bias."""
    _moe_counts(name, cfg, f, opt_int, "n_routed_experts")
    width = opt_int("moe_intermediate_size")
    f["moe_intermediate_size"] = width
    f["shared_expert_intermediate_size"] = opt_int("n_shared_experts") * width
    if opt_int("moe_layer_freq", 1) != 1:
        raise _refuse(name, f"moe_layer_freq={cfg['moe_layer_freq']} is not modelled (1 only)")
    f["num_dense_layers"] = opt_int("first_k_dense_replace")
    f["router_bias"] = cfg.get("topk_method", "noaux_tc") == "noaux_tc"  # e_score_correction_bias
    f["attention_bias"] = f["output_bias"] = False
    for key in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
        f[key] = opt_int(key)
    f["q_lora_rank"] = opt_int("q_lora_rank")
    f["head_dim"] = f["qk_nope_head_dim"] + f["qk_rope_head_dim"]


def _gpt_oss(name, cfg, f, opt_int) -> None:
    """gpt-oss: experts of ``intermediate_size`` with biases, router bias, q/k/v/o biases."""
    _moe_counts(name, cfg, f, opt_int, "num_local_experts")
    f["moe_intermediate_size"] = f["intermediate_size"]
    f["mlp_bias"] = f["router_bias"] = True
    f["attention_bias"] = f["output_bias"] = True


FAMILIES: dict[str, Callable] = {
    "llama": _llama,
    "mistral": _llama,
    "qwen": _qwen,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "internlm": _internlm,
    "phi": _phi,
    "mixtral": _mixtral,
    "qwen3_moe": _qwen3_moe,
    "deepseek_v3": _deepseek_v3,
    "gpt_oss": _gpt_oss,
}
