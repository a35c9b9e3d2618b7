"""The ``sglang`` memory planner: KV capacity as SGLang sizes its token pool.

SGLang (``python/sglang/srt/model_executor/model_runner.py``,
``profile_max_num_token``) measures the free memory after loading the weights
and keeps ``total x (1 - mem_fraction_static)`` of the device for activations
and CUDA graphs, so the KV pool is ``total x mem_fraction_static - weights -
whatever else the process already holds`` (here ``other_gb``: the CUDA
context and communication buffers, which vidur cannot know; 0 by default),
divided by the KV bytes of one token (``max_total_num_tokens``), then capped
by ``--max-total-tokens`` when given (SGLang takes the smaller and warns).

``mem_fraction_static`` unset is SGLang's heuristic (``server_args.py``,
``ServerArgs._handle_gpu_memory_settings``, SGLang 0.5.x, 2025-2026): with the
GPU's memory ``M`` in MiB, ``reserved = 512 + max(chunked_prefill_size, 2048)
x 1.5 + cuda_graph_max_bs x 2 + tp x pp / 8 x 1024`` MiB (with chunked prefill
off, ``max_prefill_tokens`` takes the chunk size's place), at least 10 GiB on
GPUs with more than 60 GiB, and ``mem_fraction_static = round((M - reserved) /
M, 3)``. ``chunked_prefill_size`` and ``cuda_graph_max_bs`` unset are the same
file's per-GPU defaults (:func:`gpu_defaults`): 2048/8 under 20 GiB, 2048/24
(80 at TP >= 4) under 35 GiB, 4096/32 (160) under 60 GiB, 8192/256 (512) under
160 GiB, 16384/512 above. They are SGLang arguments of the scheduler too
(``replica_scheduler``); here they only enter the heuristic, and the ``sglang``
policy refuses a scenario where the two sections disagree.

KV is token-granular (SGLang's ``page_size`` 1): one block is one token.
Models mixing sliding-window and full layers (SGLang's hybrid SWA pool) are
refused in one line.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from vidur.errors import VidurError
from vidur.hardware.spec import DeviceSpec
from vidur.memory.base import MemoryPlan, MemoryPlanner
from vidur.model.catalog import check_parallelism
from vidur.model.cost import kv_bytes_split, max_stage_weights_bytes
from vidur.model.spec import ModelSpec

MiB = 1 << 20
GB = 1e9
#: SGLang's ``--max-prefill-tokens`` default (``server_args.py``)
DEFAULT_MAX_PREFILL_TOKENS = 16384


def gpu_defaults(memory_bytes: int, tp: int) -> tuple[int, int]:
    """SGLang's ``(chunked_prefill_size, cuda_graph_max_bs)`` for a GPU of ``memory_bytes``
    at tensor parallelism ``tp`` (``ServerArgs._handle_gpu_memory_settings``)."""
    mib = memory_bytes / MiB
    big_tp = tp >= 4
    if mib < 20 * 1024:  # T4, RTX 4080
        return 2048, 8
    if mib < 35 * 1024:  # A10, RTX 4090, RTX 5090
        return 2048, 80 if big_tp else 24
    if mib < 60 * 1024:  # A100 40GB, L40(S)
        return 4096, 160 if big_tp else 32
    if mib < 160 * 1024:  # H100, A100 80GB, H20, H200
        return 8192, 512 if big_tp else 256
    return 16384, 512  # B200, MI300X


def default_mem_fraction_static(memory_bytes: int, chunked_prefill_size: int, cuda_graph_max_bs: int,
                                tp: int, pp: int, max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS) -> float:
    """SGLang's default ``mem_fraction_static`` (the same function; no DP attention, no
    speculative decoding, no piecewise CUDA graphs, text-only model)."""
    mib = memory_bytes / MiB
    chunk = chunked_prefill_size if chunked_prefill_size > 0 else max_prefill_tokens
    reserved = 512 + max(chunk, 2048) * 1.5 + cuda_graph_max_bs * 2 + tp * pp / 8 * 1024
    if mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((mib - reserved) / mib, 3)


def _positive_or_none(name: str, v) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise VidurError(f"sglang memory planner {name} must be a positive integer or null, got {v!r}")


@attrs.frozen
class SGLangMemoryConfig:
    """SGLang's memory arguments (figures per GPU; GB = 10⁹ bytes).

    - ``mem_fraction_static``: share of device memory for weights + KV pool; None is
      SGLang's heuristic from the GPU's memory, ``chunked_prefill_size``,
      ``cuda_graph_max_bs``, TP and PP (:func:`default_mem_fraction_static`).
    - ``max_total_tokens``: cap on the KV pool in tokens (SGLang's ``--max-total-tokens``:
      the smaller of it and the arithmetic).
    - ``chunked_prefill_size``, ``cuda_graph_max_bs``, ``max_prefill_tokens``: the inputs of
      the heuristic (None: the GPU's defaults); keep them equal to ``replica_scheduler``'s.
    - ``other_gb``: memory the process holds besides weights before the pool is sized
      (CUDA context, NCCL buffers), which SGLang's measurement of free memory includes.
    """

    mem_fraction_static: float | None = None
    max_total_tokens: int | None = None
    chunked_prefill_size: int | None = None
    cuda_graph_max_bs: int | None = None
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    other_gb: float = 0.0

    def __attrs_post_init__(self) -> None:
        f = self.mem_fraction_static
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0):
            raise VidurError(f"sglang memory planner mem_fraction_static must be in (0, 1] or null (SGLang's heuristic), got {f!r}")
        _positive_or_none("max_total_tokens", self.max_total_tokens)
        _positive_or_none("cuda_graph_max_bs", self.cuda_graph_max_bs)
        _positive_or_none("max_prefill_tokens", self.max_prefill_tokens)
        c = self.chunked_prefill_size
        if c is not None and (isinstance(c, bool) or not isinstance(c, int)):
            raise VidurError(f"sglang memory planner chunked_prefill_size must be an integer (<= 0: chunked prefill off) or null, got {c!r}")
        o = self.other_gb
        if isinstance(o, bool) or not isinstance(o, (int, float)) or o < 0:
            raise VidurError(f"sglang memory planner other_gb must be a non-negative number of GB, got {o!r}")

    def effective(self, device: DeviceSpec, tp: int, pp: int) -> tuple[int, int, float]:
        """``(chunked_prefill_size, cuda_graph_max_bs, mem_fraction_static)`` in effect on ``device``."""
        chunk, graph_bs = gpu_defaults(device.memory_bytes, tp)
        if self.chunked_prefill_size is not None:
            chunk = self.chunked_prefill_size
        if self.cuda_graph_max_bs is not None:
            graph_bs = self.cuda_graph_max_bs
        frac = self.mem_fraction_static
        if frac is None:
            frac = default_mem_fraction_static(device.memory_bytes, chunk, graph_bs, tp, pp, self.max_prefill_tokens)
        return chunk, graph_bs, frac


class SGLangMemoryPlanner(MemoryPlanner):
    """SGLang's token pool: ``mem_fraction_static`` of the device less the weights, in tokens."""

    name: ClassVar[str] = "sglang"
    Config: ClassVar[type] = SGLangMemoryConfig

    def plan(self, model: ModelSpec, device: DeviceSpec, tp: int, pp: int) -> MemoryPlan:
        """KV tokens per GPU of the heaviest stage for ``model`` split ``tp`` x ``pp`` on ``device``."""
        check_parallelism(model, tp, pp)
        c = self.config
        _, _, frac = c.effective(device, tp, pp)
        where = f"at TP{tp}/PP{pp}"
        full, window = kv_bytes_split(model, tp, pp)
        if full and window:
            raise VidurError(
                f"sglang memory planner: {model.short_name} mixes sliding-window and full-attention layers; "
                "SGLang's hybrid SWA pool (swa_full_tokens_ratio) is not modelled; use memory_planner: paged"
            )
        per_token = full + window
        static = int(device.memory_bytes * frac)
        weights = max_stage_weights_bytes(model, tp, pp)
        other = int(c.other_gb * GB)
        kv = static - weights - other
        tokens = kv // per_token if kv > 0 else 0
        if c.max_total_tokens is not None:
            tokens = min(tokens, c.max_total_tokens)
        if tokens < 1:
            raise VidurError(
                f"{model.short_name} {where} on {device.name}: mem_fraction_static {frac:g} gives "
                f"{static / GB:.1f} GB for weights and KV cache, and the weights take {weights / GB:.1f} GB"
                + (f" (+ {other / GB:.1f} GB other_gb)" if other else "")
                + "; no room for the KV pool: raise tensor_parallel or pipeline_parallel, or mem_fraction_static"
            )
        return MemoryPlan(
            num_blocks=int(tokens),
            block_size=1,
            kv_bytes_per_token=per_token,
            weights_bytes=weights,
            activation_bytes=int(device.memory_bytes - static),
            kv_cache_bytes=int(tokens * per_token),
            usable_bytes=static,
        )
