"""vLLM V1 (2025-2026): one token budget per step, running requests first, then waiting.

Each step gets ``max_num_batched_tokens`` tokens. Running requests are served
first, in the order they were admitted: a decoding request takes 1 token, a
request still prefilling takes its next chunk (capped by
``long_prefill_token_threshold`` when > 0 and by the budget left). A request
whose next KV block does not fit preempts the most recently admitted running
request (recompute: its KV is freed and it goes back to the front of the
queue), as many as needed. Then, only if nothing was preempted this step,
waiting requests are admitted first come first served while the budget, the
``max_num_seqs`` cap and the KV cache allow; the whole prompt must fit in the
free blocks at admission (vLLM's ``scheduler_reserve_full_isl``, on by
default) but only the scheduled chunk's blocks are taken. Automatic prefix
caching is on by default, as in vLLM V1 (``prefix_caching``, vLLM's
``enable_prefix_caching``): an admitted request starts after its cached
prefix, and a request preempted by recompute may find its own blocks
still cached. Without
``enable_chunked_prefill`` a prompt that does not fit the budget left waits.

The engine-level settings live here too: ``async_scheduling`` (the next
step's host work overlaps this step's GPU work, so an iteration takes
max(GPU, host) instead of their sum) and ``cudagraph_capture_sizes`` (batches
of at most the largest size run as a CUDA graph padded to the next captured
size). KV capacity (``gpu_memory_utilization``, ``block_size``,
``num_gpu_blocks_override``) is the ``paged`` memory planner's job.

Source: vLLM ``vllm/v1/core/sched/scheduler.py`` (``Scheduler.schedule``) and
``vllm/config/scheduler.py``, ``compilation.py`` at v0.19.
"""

from __future__ import annotations

import attrs

from vidur.entities.batch import Batch
from vidur.errors import VidurError
from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig


def default_capture_sizes(max_size: int = 512) -> tuple[int, ...]:
    """vLLM's default CUDA-graph capture sizes: 1, 2, 4, then steps of 8 to 256, then of 16
    up to ``max_cudagraph_capture_size`` (512 by default; vLLM caps it at twice
    ``max_num_seqs``)."""
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, max_size + 1, 16))
    return tuple(s for s in sizes if s <= max_size)


def _sizes(value) -> tuple[int, ...]:
    if value is None:
        return ()
    try:
        sizes = tuple(sorted({int(v) for v in value}))
    except (TypeError, ValueError):
        raise VidurError(f"vllm_v1 cudagraph_capture_sizes must be a list of positive integers, got {value!r}") from None
    if sizes and sizes[0] < 1:
        raise VidurError(f"vllm_v1 cudagraph_capture_sizes must be positive, got {list(value)!r}")
    return sizes


@attrs.frozen(kw_only=True)
class VLLMV1Config(SchedulerConfig):
    """vLLM V1's scheduler arguments under their own names (defaults: ``vllm serve`` on a GPU
    with >= 70 GiB that is not an A100; smaller GPUs and A100s get 2048 and 256).

    ``max_batch_size`` (the field every policy shares) mirrors ``max_num_seqs``: set either
    (the generic tools set ``max_batch_size``), not both to different values.
    ``cudagraph_capture_sizes``: None is vLLM's default list, ``[]`` is ``enforce_eager``.
    """

    max_batch_size: int | None = None
    max_num_seqs: int | None = None  # None: max_batch_size if set, else 1024
    max_num_batched_tokens: int = 8192
    long_prefill_token_threshold: int = 0
    enable_chunked_prefill: bool = True
    async_scheduling: bool = True
    cudagraph_capture_sizes: tuple[int, ...] | None = attrs.field(default=None, converter=lambda v: v if v is None else _sizes(v))

    def __attrs_post_init__(self):
        if self.max_num_seqs is not None and self.max_batch_size not in (None, self.max_num_seqs):
            raise VidurError(
                f"vllm_v1 max_batch_size mirrors max_num_seqs (vLLM's name); got max_batch_size "
                f"{self.max_batch_size} and max_num_seqs {self.max_num_seqs}: set one"
            )
        seqs = self.max_num_seqs if self.max_num_seqs is not None else self.max_batch_size or 1024
        object.__setattr__(self, "max_num_seqs", seqs)
        object.__setattr__(self, "max_batch_size", seqs)
        for key in ("max_num_seqs", "max_num_batched_tokens"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise VidurError(f"vllm_v1 {key} must be a positive integer, got {v!r}")
        t = self.long_prefill_token_threshold
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise VidurError(f"vllm_v1 long_prefill_token_threshold must be an integer >= 0 (0: off), got {t!r}")

    @property
    def graph_sizes(self) -> tuple[int, ...]:
        """The captured batch sizes in effect (vLLM's default list when unset)."""
        if self.cudagraph_capture_sizes is None:
            return default_capture_sizes(min(512, 2 * self.max_num_seqs))
        return self.cudagraph_capture_sizes


class VLLMV1Scheduler(ReplicaScheduler):
    """vLLM V1's ``Scheduler.schedule``: a shared token budget, running requests first
    (decodes and unfinished prefill chunks), preemption of the newest by recompute, then
    FCFS admission of waiting requests when nothing was preempted."""

    name = "vllm_v1"
    Config = VLLMV1Config
    models_engine = "vLLM V1"
    lazy_decode = True
    prefix_caching_default = True  # vLLM V1's enable_prefix_caching

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        #: the engine overlaps host work with the GPU (read by the event loop)
        self.host_overlap = bool(c.async_scheduling)
        #: batch sizes that run as CUDA graphs (read when the estimator is built)
        self.cuda_graph_sizes = c.graph_sizes
        if self._estimator is not None and self.cuda_graph_sizes:
            # idempotent: the simulation tells the shared estimator the same sizes
            self._estimator.use_cuda_graphs(self.cuda_graph_sizes)

    def _chunk(self, remaining: int, budget: int) -> int:
        t = self.config.long_prefill_token_threshold
        if 0 < t < remaining:
            remaining = t
        return remaining if remaining < budget else budget

    def schedule(self) -> Batch | None:
        cfg, kv, waiting = self.config, self.kv, self.waiting
        queued = len(waiting)  # preempted requests go back to its front
        batch = Batch()
        budget = cfg.max_num_batched_tokens
        decoding = self.ready_decoding()
        self.decode_all(batch, decoding if len(decoding) <= budget else decoding[:budget])
        budget -= len(batch.decodes)
        for req in list(self.ready_prefilling()):
            if budget <= 0:
                break
            if not req.blocks and req.kv_len == 0 and req in waiting:
                continue  # preempted earlier in this step
            chunk = self._chunk(req.prefill_target - req.kv_len, budget)
            if self._grow_or_preempt(batch, req, chunk):
                batch.add(req, chunk)
                budget -= chunk
        if len(waiting) > queued:  # vLLM admits nothing in a step that preempted
            return batch or None
        caching = kv.prefix_caching
        while budget > 0 and waiting and len(self.running) < cfg.max_num_seqs:
            req = waiting[0]
            target = req.prefill_target
            hit = kv.cached_prefix(req) if caching else 0
            if not cfg.enable_chunked_prefill and target - hit > budget:
                break
            if not kv.can_admit(req, kv.blocks_for(target)):  # the whole prompt must fit
                break
            chunk = self._chunk(target - hit, budget)
            self.admit(req, kv.blocks_for(hit + chunk))  # only the chunk's blocks are taken
            batch.add(req, chunk)
            budget -= chunk
        return batch or None

    def _grow_or_preempt(self, batch: Batch, req, chunk: int) -> bool:
        """Blocks for ``req``'s next ``chunk``, preempting :meth:`victim` (the newest running
        request outside this step's batch) while they do not fit. False if ``req`` itself was
        preempted."""
        kv = self.kv
        while not kv.ensure(req, req.kv_len + chunk):
            taken = {id(r) for r in batch.prefills}
            taken.update(id(r) for r in batch.decodes)
            cands = [r for r in self.running if not r.in_flight and id(r) not in taken]
            victim = self.victim(req, cands)
            self.preempt(victim)
            if victim is req:
                return False
        return True

    def is_steady(self, batch: Batch) -> bool:
        return self.steady_decode(batch)
