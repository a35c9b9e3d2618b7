"""The ``paged`` memory planner: vLLM-style KV-cache sizing per GPU.

KV capacity per GPU = device memory × ``gpu_memory_utilization``
− weights of the heaviest pipeline stage's shard − activation reserve.
One token's KV takes 2 × (layers of one stage) × max(1, kv_heads / tp) ×
head_dim × ``kv_dtype_bytes`` (MLA: ``kv_lora_rank + qk_rope_head_dim``
per layer, on every TP rank); the capacity is cut into blocks of
``block_size`` tokens. Weights are those of the stage's shard at their
dtypes (FP8/INT4/MXFP4), routed experts split over ``expert_parallel``.

Sliding-window layers keep at most ``sliding_window`` tokens per request
(vLLM frees the blocks that leave the window): when a model mixes them
with full-attention layers (gpt-oss), the per-token KV counts only the full
layers and the window layers get a fixed reserve of ``max_num_seqs`` ×
(window + one block) tokens. When every layer slides (Mistral-7B-v0.1),
all layers count per token: an upper bound for requests longer than the
window.

The activation reserve, when ``activation_reserve_gb`` is None, is
estimated the way vLLM's profiling run finds it (vLLM V1
``gpu_worker.determine_available_memory``: KV memory =
``gpu_memory_utilization`` x total - weights - peak torch activation of a
dummy forward pass over ``max_num_batched_tokens`` and a dummy sampler run
over ``max_num_seqs`` - non-torch memory; CUDA-graph memory is estimated
separately): the peak live activations of one forward pass over
``max_batch_tokens`` tokens (residual + hidden state + the widest
intermediate of attention or MLP on this rank), the sampler's working set
for ``max_num_seqs`` sequences on the last stage (``SAMPLER_BYTES_PER_LOGIT``
per vocabulary entry: fp32 logits, fp32 probabilities, and the sort that
top-k/top-p apply, fp32 values with int64 indices), plus ``overhead_gb``
for non-torch memory and CUDA graphs.

Sources of the defaults: a measured vLLM 0.19 server logged 2,588 blocks for
Llama-3.1-8B on an RTX 4090 (25,250,627,584 bytes, utilisation 0.9,
2048 batched tokens, 256 sequences; ``../shared/data/real-vllm``), i.e. 1.24 GB
between weights and KV cache; vLLM's own breakdown, measured by llm-d on
H100 (``llm-d/llm-d-benchmark``, ``config_explorer/empirical-vllm-memory-results.md``):
non-torch memory 0.13 GiB and CUDA-graph memory -0.45 to +1.03 GiB across
models. The former defaults (the sampler as two fp32 copies of the logits,
a 1.0 GB fixed overhead) gave 2,476 blocks there (-4.3 %); these give
2,574 (-0.5 %).
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from vidur.errors import VidurError
from vidur.memory.base import MemoryPlan, MemoryPlanner, physical_shortfall
from vidur.hardware.spec import DeviceSpec
from vidur.model.catalog import check_parallelism
from vidur.model.cost import kv_bytes_split, max_stage_weights_bytes, rank_shape
from vidur.model.spec import ModelSpec

GB = 1e9
#: bytes per vocabulary entry and sequence of vLLM's dummy sampler run: fp32 logits and
#: probabilities, and top-k/top-p's sort (fp32 values + int64 indices)
SAMPLER_BYTES_PER_LOGIT = 4 + 4 + 4 + 8


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise VidurError(message)


@attrs.frozen
class PagedConfig:
    """Settings of the ``paged`` planner (figures per GPU; GB = 10⁹ bytes).

    - ``gpu_memory_utilization``: share of device memory the engine may use (vLLM's flag).
    - ``block_size``: tokens per KV block.
    - ``kv_dtype_bytes``: bytes per KV element (2 for fp16/bf16, 1 for fp8;
      None: the model's, which ``cluster.kv_cache_dtype`` sets).
    - ``activation_reserve_gb``: fixed reserve for activations and runtime
      buffers; None estimates it from ``max_batch_tokens`` / ``max_num_seqs``
      and adds ``overhead_gb``.
    - ``num_gpu_blocks_override``: use exactly this many KV blocks (vLLM's
      ``--num-gpu-blocks-override``), e.g. the count a measured server logged
      (``# GPU blocks: N``), more or fewer than the arithmetic above gives, which
      is then only reported; a count whose KV and the weights exceed the
      device's whole memory is an error.
    """

    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    kv_dtype_bytes: int | None = None
    activation_reserve_gb: float | None = None
    max_batch_tokens: int = 8192
    max_num_seqs: int = 256
    overhead_gb: float = 0.4
    num_gpu_blocks_override: int | None = None

    def __attrs_post_init__(self) -> None:
        u = self.gpu_memory_utilization
        _check(
            isinstance(u, (int, float)) and not isinstance(u, bool) and 0.0 < u <= 1.0,
            f"paged gpu_memory_utilization must be in (0, 1], got {u!r}; vLLM's default is 0.9",
        )
        for field in ("block_size", "kv_dtype_bytes", "max_batch_tokens", "max_num_seqs"):
            v = getattr(self, field)
            if field == "kv_dtype_bytes" and v is None:
                continue
            _check(
                isinstance(v, int) and not isinstance(v, bool) and v > 0,
                f"paged {field} must be a positive integer, got {v!r}",
            )
        n = self.num_gpu_blocks_override
        _check(
            n is None or (isinstance(n, int) and not isinstance(n, bool) and n > 0),
            f"paged num_gpu_blocks_override must be a positive integer or null, got {n!r}",
        )
        r = self.activation_reserve_gb
        _check(
            r is None or (isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0),
            f"paged activation_reserve_gb must be a non-negative number of GB or null (estimate), got {r!r}",
        )
        o = self.overhead_gb
        _check(
            isinstance(o, (int, float)) and not isinstance(o, bool) and o >= 0,
            f"paged overhead_gb must be a non-negative number of GB, got {o!r}",
        )


def activation_bytes(model: ModelSpec, tp: int, max_batch_tokens: int, max_num_seqs: int) -> int:
    """Estimated peak activation bytes of one forward pass on one GPU (no fixed overhead)."""
    r = rank_shape(model, tp)
    b = model.dtype_bytes
    n_up = (2 if model.gated_mlp else 1) * r.intermediate
    attention = (r.q_size + 2 * r.kv_size) + r.q_size
    if model.is_mla:  # queries, the decompressed keys/values and the latent
        qk = model.qk_nope_head_dim + model.qk_rope_head_dim
        attention = r.heads * (2 * qk + model.qk_nope_head_dim + model.v_head_dim) + model.kv_lora_rank
    widest = max(n_up + r.intermediate if model.num_dense_layers_or_all() else 0, attention)
    if model.is_moe:  # each token through k experts; with routing, its k permuted copies and the router logits
        k = model.experts_per_token
        e_up = (2 if model.gated_mlp else 1) * r.expert_width
        routed = k * r.hidden + model.num_experts if model.num_experts > 1 else 0
        widest = max(widest, k * (e_up + r.expert_width) + routed + r.shared_width * 3)
    per_token = (2 * r.hidden + widest) * b
    logits = max_num_seqs * model.vocab_size * SAMPLER_BYTES_PER_LOGIT  # the dummy sampler run
    return int(max_batch_tokens * per_token + logits)


class PagedMemoryPlanner(MemoryPlanner):
    """vLLM-style planner: whatever memory the weights and activations leave becomes KV blocks."""

    name: ClassVar[str] = "paged"
    Config: ClassVar[type] = PagedConfig

    def plan(self, model: ModelSpec, device: DeviceSpec, tp: int, pp: int) -> MemoryPlan:
        """KV blocks per GPU of the heaviest stage for ``model`` split ``tp`` × ``pp`` on ``device``."""
        check_parallelism(model, tp, pp)
        c = self.config
        usable = int(device.memory_bytes * c.gpu_memory_utilization)
        weights = max_stage_weights_bytes(model, tp, pp)
        where = f"at TP{tp}/PP{pp}"
        offer = (
            f"{device.name} offers {usable / GB:.1f} GB usable "
            f"({c.gpu_memory_utilization:.0%} of {device.memory_bytes / GB:.1f} GB)"
        )
        if weights >= usable:
            raise VidurError(
                f"{model.short_name} needs {weights / GB:.1f} GB of weights per GPU {where} but {offer}; "
                f"raise tensor_parallel or pipeline_parallel, or use a larger GPU"
            )
        if c.activation_reserve_gb is None:
            act = activation_bytes(model, tp, c.max_batch_tokens, c.max_num_seqs) + int(c.overhead_gb * GB)
        else:
            act = int(c.activation_reserve_gb * GB)
        full, window = kv_bytes_split(model, tp, pp, c.kv_dtype_bytes)
        reserve = 0
        if full and window:  # window layers: a fixed reserve per sequence slot
            per_token = full
            reserve = c.max_num_seqs * (model.sliding_window + c.block_size) * window
        else:
            per_token = full + window
        kv = usable - weights - act - reserve
        num_blocks = kv // (per_token * c.block_size) if kv > 0 else 0
        if c.num_gpu_blocks_override is not None:  # more or fewer than the arithmetic: only physics binds
            num_blocks = c.num_gpu_blocks_override
        if num_blocks < 1:
            raise VidurError(
                f"{model.short_name} {where} on {device.name}: {weights / GB:.1f} GB of weights and "
                f"{act / GB:.1f} GB of activations"
                + (f" and {reserve / GB:.1f} GB of sliding-window KV" if reserve else "")
                + f" leave no room for one KV block of {c.block_size} tokens "
                f"({per_token * c.block_size / 1e6:.1f} MB) in the {usable / GB:.1f} GB usable; raise "
                f"tensor_parallel or pipeline_parallel, or lower max_batch_tokens / activation_reserve_gb"
            )
        plan = MemoryPlan(
            num_blocks=int(num_blocks),
            block_size=c.block_size,
            kv_bytes_per_token=per_token,
            weights_bytes=weights,
            activation_bytes=act,
            kv_cache_bytes=int(num_blocks * per_token * c.block_size),
            usable_bytes=usable,
            window_kv_bytes=int(reserve),
        )
        if c.num_gpu_blocks_override is not None:
            short = physical_shortfall(plan, device)
            if short is not None:
                raise VidurError(f"paged num_gpu_blocks_override {num_blocks} is impossible {where}: {short}")
        return plan
