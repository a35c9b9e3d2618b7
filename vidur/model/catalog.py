"""The shipped model catalog and loading of Hugging Face ``config.json`` files.

Shipped configs live in ``vidur/model/configs/<org>/<name>.json`` and hold
the real Hugging Face config fields; a model is named by its Hugging Face id.
:func:`load_model` accepts a registered name, a local ``config.json`` or a
directory holding one. :func:`check_parallelism` holds the TP/PP rules every
planner and estimator shares.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from vidur.errors import VidurError
from vidur.model.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from vidur.hardware.spec import NodeSpec
    from vidur.plugins import PluginHost

CONFIG_DIR = Path(__file__).parent / "configs"

#: extra names for shipped models: alias -> Hugging Face id
ALIASES = {
    "meta-llama/Meta-Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-70B": "meta-llama/Llama-3.1-70B",
}

#: the tiny Llama-shaped model used by CPU tests, profiling and validation
TINY_MODEL = "vidur/tiny-llama"


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VidurError(f"cannot read model config {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VidurError(
            f"model config {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix the file"
        ) from None
    if not isinstance(data, dict):
        raise VidurError(f"model config {path} must hold a JSON object, not {type(data).__name__}")
    return data


def load_config_file(path: str | Path, name: str | None = None) -> ModelSpec:
    """Load a Hugging Face ``config.json`` (or a directory holding one) as a spec.

    The spec's name is ``name``, else the config's ``_name_or_path``, else
    ``<parent dir>/<file stem>`` for a file, or the directory name.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        cfg_path = p / "config.json"
        if not cfg_path.is_file():
            raise VidurError(f"directory {p} holds no config.json; point at a Hugging Face model directory or a .json file")
        default_name = p.name
    elif p.is_file():
        cfg_path = p
        default_name = p.parent.name if p.name == "config.json" else p.stem
    else:
        raise VidurError(f"model config {p} does not exist; give a registered model name or a path to a config.json")
    data = _read_json(cfg_path)
    name = name or data.get("_name_or_path") or default_name
    try:
        return ModelSpec.from_hf_config(str(name), data)
    except VidurError as exc:
        raise VidurError(f"{cfg_path}: {exc}") from None


@functools.lru_cache(maxsize=None)
def _shipped() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for path in sorted(CONFIG_DIR.glob("*/*.json")):
        name = f"{path.parent.name}/{path.stem}"
        specs[name] = ModelSpec.from_hf_config(name, _read_json(path))
    for alias, target in ALIASES.items():
        specs[alias] = attrs.evolve(specs[target], name=alias)
    return specs


def builtin_models() -> list[ModelSpec]:
    """Every shipped model spec, aliases included, sorted by name."""
    return [spec for _, spec in sorted(_shipped().items())]


def builtin_model_names() -> list[str]:
    """Names of the shipped models (Hugging Face ids and aliases)."""
    return sorted(_shipped())


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or s.endswith(".json") or "\\" in s


def load_model(name_or_path: str | Path, host: "PluginHost | None" = None) -> ModelSpec:
    """A model spec by registered name, by unique short name, or from a local config.

    Lookup order: a shipped model (``meta-llama/Llama-2-7b-hf``), a shipped
    model's unique short name (``Llama-2-7b-hf``), a model registered by a
    plugin in ``host`` (default: the process-wide host), then a local
    ``config.json`` file or a directory holding one. Strings starting with
    ``.``, ``/`` or ``~`` or ending in ``.json`` are always paths.
    """
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    s = str(name_or_path)
    shipped = _shipped()
    if isinstance(name_or_path, Path) or _looks_like_path(s):
        return load_config_file(s)
    if s in shipped:
        return shipped[s]
    short = [spec for n, spec in shipped.items() if n.rsplit("/", 1)[-1] == s and n not in ALIASES]
    if len(short) == 1:
        return short[0]
    if Path(s).expanduser().exists():
        return load_config_file(s)
    registered = list(shipped)
    if host is None:
        try:
            from vidur.plugins import get_host

            host = get_host()
        except VidurError:
            host = None
    if host is not None:
        table = host.registries.get("model", {})
        if s in table:
            return table[s].obj
        registered = sorted(set(registered) | set(table))
    close = difflib.get_close_matches(s, registered, n=3, cutoff=0.4)
    close += [n for n in registered if s.lower() in n.lower() and n not in close][: 3 - len(close)]
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise VidurError(
        f"unknown model {s!r}{hint}; give a registered name (see `vidur plugins`) "
        f"or a path to a Hugging Face config.json"
    )


def deploy(
    model: ModelSpec, *, weight_dtype: str = "auto", kv_cache_dtype: str = "auto", expert_parallel: int = 1
) -> ModelSpec:
    """``model`` as a deployment runs it: weight and KV-cache dtypes, expert-parallel degree.

    ``weight_dtype`` ``auto`` keeps the checkpoint's (its ``quantization_config``);
    ``fp8``/``int4``/``bf16``/``fp16`` apply to every linear layer, experts
    included (vLLM ``--quantization fp8`` quantizes them all); ``mxfp4``
    to the routed experts only (gpt-oss's scheme). ``kv_cache_dtype`` as
    vLLM's ``--kv-cache-dtype`` (``auto``: the model's dtype).
    """
    from vidur.model.spec import KV_DTYPE_BYTES

    changes: dict = {}
    if weight_dtype == "mxfp4":
        if not model.is_moe:
            raise VidurError(f"weight_dtype mxfp4 quantizes routed experts; {model.short_name} has none")
        changes["expert_weight_dtype"] = "mxfp4"
    elif weight_dtype != "auto":
        changes.update(weight_dtype=weight_dtype, expert_weight_dtype=weight_dtype)
    if kv_cache_dtype != "auto":
        changes["kv_dtype_bytes"] = KV_DTYPE_BYTES[kv_cache_dtype]
    if expert_parallel != model.expert_parallel:
        changes["expert_parallel"] = expert_parallel
    return attrs.evolve(model, **changes) if changes else model


def unprofiled_features(model: ModelSpec) -> list[str]:
    """What of ``model`` (as deployed) the profiler's operator set does not measure (empty: all covered).

    The profile-based estimators refuse such a model instead of pricing it as a
    dense bf16 one; ``runtime_estimator: auto`` takes the roofline for it.
    Mixtral-style MoEs (every layer routed, experts tensor-parallel) are
    profiled: their ``router`` and ``experts`` operators.
    """
    out = []
    if model.is_moe and (model.num_dense_layers or model.shared_expert_intermediate_size or model.expert_parallel > 1):
        out.append("dense and MoE layers mixed, shared experts or expert parallelism")
    if model.is_mla:
        out.append("multi-head latent attention")
    if model.num_window_layers:
        out.append("sliding-window layers")
    if model.weight_bytes != model.dtype_bytes or model.expert_bytes != model.dtype_bytes:
        out.append(f"{model.weight_dtype}/{model.expert_weight_dtype} weights")
    if model.kv_bytes != model.dtype_bytes:
        out.append(f"{model.kv_bytes}-byte KV cache")
    return out


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """KV heads each TP rank stores: ``kv_heads / tp``, at least 1 (replicated when tp > kv_heads)."""
    return max(1, model.num_kv_heads // tp)


def check_parallelism(model: ModelSpec, tp: int, pp: int, node: "NodeSpec | None" = None) -> None:
    """Raise :class:`VidurError` unless ``model`` can be split ``tp`` × ``pp`` (on ``node``).

    Rules (as in vLLM): tp divides the attention heads; tp divides the KV
    heads or the KV heads divide tp (then each rank keeps a replica); pp
    divides the layers; a TP group fits in one node. Expert parallelism
    (``model.expert_parallel``) needs a MoE, divides tp (the experts are
    split over the TP group's GPUs) and divides the experts.
    """
    who = model.short_name
    for label, value in (("tensor_parallel", tp), ("pipeline_parallel", pp)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise VidurError(f"{label} must be a positive integer, got {value!r}")
    if model.num_heads % tp:
        divs = [d for d in range(1, model.num_heads + 1) if model.num_heads % d == 0 and d <= 64]
        raise VidurError(
            f"{who} has {model.num_heads} attention heads, not divisible by tensor_parallel={tp}; "
            f"use one of {', '.join(map(str, divs))}"
        )
    ep = model.expert_parallel
    if ep > 1:
        if not model.is_moe:
            raise VidurError(f"expert_parallel={ep} needs a mixture-of-experts model; {who} is dense, use 1")
        if tp % ep:
            raise VidurError(
                f"expert_parallel={ep} must divide tensor_parallel={tp} (experts are split over the GPUs "
                f"of a replica's TP group); use a divisor of {tp}"
            )
        if model.num_experts % ep:
            raise VidurError(
                f"{who} has {model.num_experts} experts, not divisible by expert_parallel={ep}; use a divisor of both"
            )
    kv = model.num_kv_heads
    if kv % tp and tp % kv and not model.is_mla:
        raise VidurError(
            f"{who} has {kv} KV heads; tensor_parallel={tp} must divide them or be a multiple of them"
        )
    if model.num_layers % pp:
        divs = [d for d in range(1, model.num_layers + 1) if model.num_layers % d == 0 and d <= 16]
        raise VidurError(
            f"{who} has {model.num_layers} layers, not divisible by pipeline_parallel={pp}; "
            f"use one of {', '.join(map(str, divs))}"
        )
    if node is not None and tp > node.num_devices:
        raise VidurError(
            f"tensor_parallel={tp} does not fit in one {node.name} node of {node.num_devices} GPUs; "
            f"lower tensor_parallel or use pipeline_parallel across nodes"
        )
