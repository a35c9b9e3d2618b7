"""The reference executor: a PyTorch Llama-family decoder that runs real batches.

:class:`ReferenceExecutor` executes exactly the batches a replica scheduler
forms, one forward pass per iteration: each decode feeds its last generated
token against its KV cache, each prefill chunk attends to the tokens already
cached for its request plus itself (causal), and every sequence in the batch
gets a greedy next token from the LM head. Weights are random (timing does
not depend on their values): bf16 on CUDA, float32 on CPU.

The layer is the usual Llama one: RMSNorm, fused QKV projection, rotary
embedding (rotate-half), grouped-query attention, output projection,
residual, RMSNorm, fused gate/up projection, SiLU-gated MLP, down projection,
residual; then final RMSNorm, LM head and argmax. Every operator comes from
:mod:`vidur.reference.layers` (:func:`~vidur.reference.layers.layer_forward` is the
layer), the module the profiler times: on CPU the profiler runs this very
executor (:meth:`ReferenceExecutor.time_iteration`) with a clock ticking
after each operator, so the CPU profile measures what validation executes.

KV cache (never recomputed; a preempted request's KV is dropped and rebuilt
by its recompute prefill, as the scheduler decided):

- ``paged`` (CUDA): one pool of 256-token pages per layer, a page table per
  request, attention by FlashAttention varlen over the block table
  (``torch.nn.attention.varlen.varlen_attn``), one call for the decodes and
  one for the prefill chunks of an iteration;
- ``contiguous`` (CUDA without paged varlen, and CPU): one token-slot pool
  per layer in which each request owns a contiguous range of
  ``prompt + output`` slots (reserved when it is first scheduled), new KV
  written by one ``index_copy_`` per layer; attention on CUDA by
  FlashAttention varlen (``aten._flash_attention_forward``) with each
  sequence's first slot as its key offset and ``seqused_k`` as its length
  (one call for the decodes, one for the prefill chunks), on CPU (or when
  that kernel is missing) by ``scaled_dot_product_attention`` per request.

The attention kernels and their checks are :mod:`vidur.reference.attention`'s,
which the GPU profiler uses too, in the same order of preference.

Decode-only iterations replay CUDA graphs captured per batch-size bucket
(:meth:`ReferenceExecutor.capture_graphs`), as vLLM does; prefill and mixed
iterations run eagerly.

Timing: each call of :meth:`ReferenceExecutor.execute` returns an
:class:`IterationTiming`: ``wall_s`` (host clock from input preparation to
the sampled tokens on the host: what a serving engine's iteration takes) and
``forward_s`` (CUDA events around the forward pass and sampling on GPU;
``perf_counter`` on CPU). KV allocation happens before the clock starts.

Only this module (with :mod:`vidur.reference.layers`, and the validation runner
and profiler that import it lazily) needs torch; the simulator never imports
it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np

from vidur.errors import VidurError
from vidur.model.spec import ModelSpec
from vidur.reference.device import available_memory, flushing_denormals, torch_device, torch_module
from vidur.reference.graphs import CudaGraphs
from vidur.reference.inputs import IterationInputs
from vidur.reference.kv import PAGE, FlashKV, PagedKV, SdpaKV, SeqState, SlotRanges
from vidur.reference.shapes import ShardShape


def check_supported(model: ModelSpec) -> None:
    """Raise a one-line :class:`VidurError` unless the executor can build ``model``.

    Supported: Llama-family decoders (RMSNorm, SwiGLU MLP, full rotary
    embedding, sequential attention then MLP, optional QKV bias as in Qwen2),
    and their Mixtral-style mixtures of experts (every layer routed, top-k,
    experts tensor-parallel).
    """
    problems = []
    if model.parallel_attn_mlp:
        problems.append("parallel attention/MLP block")
    if model.norm != "rmsnorm":
        problems.append(f"{model.norm} normalisation")
    if not model.gated_mlp or model.activation not in ("silu", "swish"):
        problems.append(f"{'gated ' if model.gated_mlp else 'non-gated '}{model.activation} MLP")
    if model.partial_rotary_factor != 1.0:
        problems.append(f"partial rotary embedding ({model.partial_rotary_factor})")
    if model.output_bias or model.mlp_bias or model.lm_head_bias:
        problems.append("output/MLP/LM-head biases")
    if model.qk_norm:
        problems.append("qk-norm")
    if model.num_window_layers:
        problems.append(f"sliding-window attention ({model.sliding_window})")
    if model.is_moe and (model.num_dense_layers or model.shared_expert_intermediate_size):
        problems.append("dense layers or shared experts beside the routed ones")
    if model.expert_parallel > 1:
        problems.append(f"expert parallelism ({model.expert_parallel}; it emulates tensor parallelism only)")
    if model.is_mla:
        problems.append("multi-head latent attention")
    if problems:
        raise VidurError(
            f"the reference executor builds Llama-family decoders (and Mixtral-style MoEs) only; {model.name} has "
            f"{', '.join(problems)}; validate a Llama-shaped model (e.g. vidur/tiny-llama, vidur/tiny-moe, "
            f"meta-llama/Meta-Llama-3-8B)"
        )


class IterationTiming:
    """Measured times of one iteration, in seconds."""

    __slots__ = ("forward_s", "wall_s")

    def __init__(self, wall_s: float, forward_s: float):
        self.wall_s = wall_s
        self.forward_s = forward_s

    def __repr__(self) -> str:
        return f"IterationTiming(wall_s={self.wall_s:.6f}, forward_s={self.forward_s:.6f})"


class ReferenceExecutor(IterationInputs, CudaGraphs):
    """Runs scheduler-formed batches on a random-weight Llama-family model.

    ``max_kv_tokens`` bounds the KV tokens held at once (the replica KV
    capacity the scheduler enforces, times replicas): it sizes the paged
    pool; ``reserved_tokens`` bounds Σ(prompt + output) of the requests held
    at once: it sizes the contiguous pool (default ``max_kv_tokens``);
    ``max_batch_tokens`` bounds the tokens of one iteration. ``attention``
    forces the kernel, ``paged``, ``flash`` or ``sdpa`` (default: the first
    that works; see :meth:`_choose_attention`). ``threads`` sets
    ``torch.set_num_threads`` (CPU).

    For the profiler: ``tp`` builds the weights of one rank of tensor
    parallelism ``tp`` (heads, MLP and vocabulary sharded; the all-reduces
    are not run), ``layers`` builds fewer decoder layers than the model has,
    ``dtype`` overrides bf16 (CUDA) / float32 (CPU), ``llama_only=False``
    builds any decoder the shared operators cover (LayerNorm, GELU, biases,
    partial rotary, parallel attention/MLP); :meth:`time_iteration` times a
    synthetic iteration operator by operator.
    """

    #: whether :meth:`execute` overlaps an iteration's host work with the previous iteration's
    #: device work, as an engine with async scheduling does: it does not (input preparation,
    #: forward pass and sampling run one after the other), so ``vidur validate`` prices the
    #: simulated side's steps as device + host for every policy
    overlaps_host: bool = False

    def __init__(
        self,
        model: ModelSpec,
        device: str = "cpu",
        *,
        max_kv_tokens: int,
        reserved_tokens: int | None = None,
        max_batch_tokens: int = 8192,
        max_seq_tokens: int | None = None,
        max_requests: int = 1024,
        attention: str | None = None,
        threads: int | None = None,
        seed: int = 0,
        tp: int = 1,
        layers: int | None = None,
        dtype=None,
        llama_only: bool = True,
    ):
        if llama_only:
            check_supported(model)
        torch = self.torch = torch_module("vidur validate")
        from vidur.reference import attention as kernels
        from vidur.reference import layers as ops

        self._ops = ops  # the operators, shared with the profiler
        self._attn = kernels  # the attention kernels, shared with the profiler
        self.model = model
        self.device = torch_device(device)
        self.device_type = self.device.type
        if dtype is None:
            dtype = torch.bfloat16 if self.device_type == "cuda" else torch.float32
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if threads is not None and self.device_type == "cpu":
            torch.set_num_threads(max(1, int(threads)))
        # random activations must not hit slow denormal paths: flush them while an iteration runs (and
        # only then: the flag is process-wide CPU state that other code, e.g. Hypothesis, refuses to share)
        self._flush = self.device_type == "cpu" and not flushing_denormals(torch)
        self.seed = seed
        self.tp = int(tp)
        self.shape = ShardShape(model, self.tp)
        #: how a mixture of experts runs here (vidur.reference.layers.experts_kernel); None when dense
        self.experts_kernel = self._ops.experts_kernel(self.shape, self.device, self.dtype) if model.is_moe else None
        self.num_layers = int(layers) if layers else model.num_layers
        self.vocab = self.shape.vocab
        self.q_heads, self.kv_heads, self.head_dim = self.shape.q_heads, self.shape.kv_heads, self.shape.head_dim
        self.q_dim, self.kv_dim = self.shape.q_dim, self.shape.kv_dim
        self.max_pos = max(int(max_seq_tokens or model.max_position_embeddings), 1)
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.gqa = self.q_heads != self.kv_heads
        self._paged_cu_k = True  # pass cu_seq_k along with the block table
        self.paged_error: str | None = None
        self.flash_error: str | None = None
        self.kernel = "sdpa"
        paged_slots = (-(-int(max_kv_tokens) // PAGE) + int(max_requests) + 1) * PAGE
        range_slots = int(reserved_tokens if reserved_tokens is not None else max_kv_tokens)
        self._check_memory(max(paged_slots, range_slots), max_batch_tokens)
        self._build_weights()
        self.attention = self._choose_attention(attention)
        if self.attention == "paged":
            pages = paged_slots // PAGE
            shape = (pages, PAGE, self.kv_heads, self.head_dim)
            self.free_pages = list(range(pages - 1, -1, -1))
        else:
            shape = (range_slots, self.kv_heads, self.head_dim)
            self.ranges = SlotRanges(range_slots)
        self.k_pool = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.num_layers)]
        self.v_pool = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.num_layers)]
        self.seqs: dict[int, SeqState] = {}
        #: the run's prefix tree as (parent, start) lists: requests with content
        #: get token ids drawn per tree node, so shared prefixes are equal tokens
        self.content_tree: tuple[list[int], list[int]] | None = None
        self.prefix_fills = 0  # prefix-cache hits whose KV was rebuilt outside the timed region
        self._live: dict[int, object] = {}  # request id -> Request whose KV this executor holds
        self.last_tokens: list[int] = []
        self.iterations = 0
        self.graph_iterations = 0
        self._graphs: dict[int, dict] = {}
        self._graph_sizes: list[int] = []
        self._graph_pool = None
        self._pad_page: int | None = None
        self._pad_slot: int | None = None
        self.graph_error: str | None = None

    # -- construction ---------------------------------------------------------
    def _bytes_needed(self, kv_slots: int, max_batch_tokens: int) -> tuple[int, int, int]:
        s = self.shape
        el = self.dtype.itemsize
        weights = (self.num_layers * s.layer_params() + 2 * s.vocab * s.hidden + s.hidden) * el
        kv = 2 * self.num_layers * int(kv_slots) * self.kv_dim * el
        act = int(max_batch_tokens) * (s.hidden * 4 + self.q_dim + 2 * self.kv_dim + 3 * s.inter) * el
        act += 1024 * s.vocab * 4  # logits of up to 1024 sequences
        return weights, kv, act

    def _check_memory(self, kv_slots: int, max_batch_tokens: int) -> None:
        weights, kv, act = self._bytes_needed(kv_slots, max_batch_tokens)
        need = weights + kv + act
        have = available_memory(self.device_type)
        margin = 0.9 if self.device_type == "cuda" else 0.8
        if need > have * margin:
            gib = 1 << 30
            raise VidurError(
                f"{self.model.name} is too big for the reference executor on this {self.device_type}: it needs "
                f"{need / gib:.1f} GiB (weights {weights / gib:.1f}, KV cache {kv / gib:.1f}, activations "
                f"{act / gib:.1f}) but {have / gib:.1f} GiB are free; validate a smaller model or fewer/shorter requests"
            )

    def _build_weights(self) -> None:
        """Random weights of every layer (:func:`vidur.reference.layers.init_layer_weights`), embedding, LM head."""
        init_layer_weights, rope_cache = self._ops.init_layer_weights, self._ops.rope_cache
        torch, m, dev, dt = self.torch, self.model, self.device, self.dtype
        g = torch.Generator(device=dev)
        g.manual_seed(self.seed)

        def rand(*shape: int, std: float = 0.02) -> torch.Tensor:
            t = torch.empty(*shape, device=dev, dtype=dt)
            t.normal_(0.0, std, generator=g)
            return t

        def ones(n: int) -> torch.Tensor:
            return torch.ones(n, device=dev, dtype=dt)

        s = self.shape
        self.layers = [init_layer_weights(s, rand, ones) for _ in range(self.num_layers)]
        self.embed = rand(s.vocab, s.hidden, std=1.0)  # like nn.Embedding's N(0, 1): tokens stay distinguishable
        self.final_norm = ones(s.hidden)
        self.final_norm_bias = rand(s.hidden) if m.norm == "layernorm" else None
        self.lm_head = self.embed if m.tie_word_embeddings else rand(s.vocab, s.hidden)
        self.lm_head_bias = rand(s.vocab) if m.lm_head_bias else None
        self.cos_cache, self.sin_cache = rope_cache(s, self.max_pos, dev, dt)

    # -- attention backends --------------------------------------------------
    def _choose_attention(self, forced: str | None) -> str:
        """Pick the attention kernel (:attr:`kernel`) and return the KV layout it needs.

        ``paged``: FlashAttention varlen over a block table (paged layout);
        ``flash``: FlashAttention varlen over per-request slot ranges;
        ``sdpa``: one ``scaled_dot_product_attention`` per request (both
        contiguous). Default: the first of these that works here.
        """
        if forced is not None and forced not in ("paged", "flash", "sdpa"):
            raise VidurError(f"attention must be paged, flash or sdpa, got {forced!r}")
        if forced == "paged" and not self._paged_works():
            raise VidurError(f"paged attention is unavailable here: {self.paged_error or 'it needs CUDA'}")
        if forced == "flash" and not self._flash_works():
            raise VidurError(f"FlashAttention varlen is unavailable here: {self.flash_error or 'it needs CUDA'}")
        if forced is None:
            forced = "paged" if self._paged_works() else ("flash" if self._flash_works() else "sdpa")
        self.kernel = forced
        return "paged" if forced == "paged" else "contiguous"

    def _flash(self, q, k_pool, v_pool, cu_q, starts, max_q, max_k, seqused, causal):
        """FlashAttention varlen over a token-slot pool (:func:`vidur.reference.attention.flash_varlen`)."""
        return self._attn.flash_varlen(q, k_pool, v_pool, cu_q, starts, max_q, max_k, seqused, causal, self.scale)

    def _flash_works(self) -> bool:
        """Check FlashAttention varlen with per-sequence start offsets against SDPA (shared with the profiler)."""
        if self.device_type != "cuda":
            return False
        self.flash_error = self._attn.check_flash(
            self.q_heads, self.kv_heads, self.head_dim, self.device, self.dtype, self.scale
        )
        return self.flash_error is None

    def _varlen(self, q, k_pool, v_pool, cu_q, cu_k, max_q, max_k, seqused, table, causal):
        """FlashAttention varlen over the block table (:func:`vidur.reference.attention.paged_varlen`)."""
        return self._attn.paged_varlen(
            q, k_pool, v_pool, cu_q, cu_k if self._paged_cu_k else None, max_q, max_k, seqused, table, causal,
            self.scale, self.gqa,
        )

    def _paged_works(self) -> bool:
        """Check the paged varlen kernel against SDPA on one chunk after cached context (shared with the profiler)."""
        if self.device_type != "cuda":
            return False
        self.paged_error, self._paged_cu_k = self._attn.check_paged(
            self.q_heads, self.kv_heads, self.head_dim, self.device, self.dtype, self.scale
        )
        return self.paged_error is None

    def _sdpa(self, q, k, v, ctx: int):
        """q: [ql, Hq, D]; k, v: [Hkv, ctx+ql, D] -> [ql, Hq, D] (causal, aligned to the end)."""
        return self._attn.sdpa_chunk(q, k, v, ctx, self.scale, self.gqa)

    @property
    def description(self) -> str:
        name = self.torch.cuda.get_device_name(self.device) if self.device_type == "cuda" else "cpu"
        extra = f", {self.torch.get_num_threads()} threads" if self.device_type == "cpu" else ""
        if self._graphs:
            extra += f", CUDA graphs for decode batches <= {self.graph_max_batch}"
        elif self.device_type == "cuda":
            extra += ", eager" + (f" (graph capture failed: {self.graph_error})" if self.graph_error else "")
        if self.device_type == "cuda" and self.kernel == "sdpa" and (self.paged_error or self.flash_error):
            extra += f" (no FlashAttention varlen: {self.flash_error or self.paged_error})"
        if self.experts_kernel:
            extra += f", experts by {'grouped GEMM' if self.experts_kernel == 'grouped_mm' else 'a loop over experts'}"
        kernel = {"paged": "FlashAttention varlen, block table", "flash": "FlashAttention varlen", "sdpa": "SDPA per request"}
        return (
            f"{self.model.name} on {name} ({str(self.dtype).replace('torch.', '')}, {self.attention} KV, "
            f"{kernel[self.kernel]}{extra})"
        )

    # -- per-request state --------------------------------------------------------
    def _seq(self, req) -> SeqState:
        s = self.seqs.get(req.id)
        if s is None:
            if req.content is not None and self.content_tree is not None:
                s = SeqState(self._content_ids(req))
            else:
                rng = np.random.default_rng((self.seed, abs(int(req.id)), int(req.id) < 0))
                s = SeqState(rng.integers(0, self.vocab, size=int(req.prompt)).tolist())
            self.seqs[req.id] = s
        return s

    def _content_ids(self, req) -> list[int]:
        """Prompt token ids from the request's content: each prefix-tree node's
        tokens are drawn from a generator seeded by the node, so requests that
        share a prefix share its ids."""
        from vidur.workload.content import request_path

        leaf, out, row = req.content[0], req.content[1], req.content[2]
        parent, start = self.content_tree
        starts, nodes = request_path(parent, start, leaf, out, int(req.prompt), -(row + 1))
        ids: list[int] = []
        for i in range(len(nodes) - 1):  # the last node is the output
            n = nodes[i]
            rng = np.random.default_rng((self.seed, 1 << 20, abs(n), n < 0))
            ids += rng.integers(0, self.vocab, size=starts[i + 1] - starts[i]).tolist()
        return ids

    def _fill_prefix(self, req, s: SeqState, ctx: int) -> None:
        """A prefix-cache hit: the scheduler starts ``req`` at ``ctx`` cached tokens.
        Their KV is computed here, outside the timed region (the data a real
        engine finds in its cache), so the timed iteration computes only the
        uncached tokens while attention reads the whole context."""
        self._drop_kv(s)
        self._reserve(req, s, ctx)
        self._run([(req, s, ctx, 0)], 0)
        s.written = ctx
        self.prefix_fills += 1

    def _drop_kv(self, s: SeqState) -> None:
        if s.pages:
            self.free_pages.extend(s.pages)
            s.pages = []
        if s.base >= 0:
            self.ranges.release(s.base, s.cap)
            s.base, s.cap = -1, 0
        s.written = 0
        s.ctx_exec = 0

    def _reserve(self, req, s: SeqState, upto: int) -> None:
        """Make room for KV tokens ``[0, upto)`` of ``req`` (outside the timed region)."""
        self._reserve_slots(s, upto, max(int(req.prompt) + int(req.output), upto), f"request {req.id}'s")

    def _reserve_slots(self, s: SeqState, upto: int, cap: int, who: str) -> None:
        if self.attention == "paged":
            need = -(-upto // PAGE) - len(s.pages)
            if need > 0:
                if need > len(self.free_pages):
                    raise VidurError(
                        "the reference executor ran out of KV pages; the scheduler's KV capacity exceeds what was "
                        "allocated (report this as a bug)"
                    )
                for _ in range(need):
                    s.pages.append(self.free_pages.pop())
        elif s.base < 0:
            s.base = self.ranges.alloc(cap)
            if s.base < 0:
                raise VidurError(
                    f"the reference executor's KV pool ({self.ranges.size} token slots) cannot hold "
                    f"{who} {cap} tokens next to the running ones; validate fewer or shorter requests"
                )
            s.cap = cap

    def _sync_state(self) -> None:
        """Drop the KV of finished or preempted requests before the next iteration."""
        for rid, req in list(self._live.items()):
            s = self.seqs[rid]
            if req.finished:
                self._drop_kv(s)
                del self.seqs[rid]
                del self._live[rid]
            elif req.kv_len < s.ctx_exec:
                self._drop_kv(s)  # preempted (recompute): the scheduler dropped its KV

    # -- the iteration ---------------------------------------------------------------
    def execute(self, batch) -> IterationTiming:
        """Run one iteration of ``batch`` (a :class:`vidur.entities.batch.Batch`) and time it."""
        self._sync_state()
        entries = []  # (req, seq, q, ctx): decodes first, then prefill chunks
        for r in batch.decodes:
            entries.append((r, self._seq(r), 1, int(r.kv_len)))
        for r, q in zip(batch.prefills, batch.chunks):
            entries.append((r, self._seq(r), int(q), int(r.kv_len)))
        for i, (r, s, q, ctx) in enumerate(entries):
            if s.written != ctx:
                if i >= len(batch.decodes) and ctx == 0:
                    self._drop_kv(s)  # recompute after a preemption: its old KV is gone
                elif i >= len(batch.decodes) and r.kvc is not None and 0 < ctx <= len(s.tokens):
                    self._fill_prefix(r, s, ctx)  # first chunk after a prefix-cache hit
                else:
                    raise RuntimeError(
                        f"request {r.id} runs {q} token(s) at KV length {ctx} but the executor holds {s.written} "
                        f"tokens of its KV: the request's progress is out of date (sync lazy decode groups first)"
                    )
            self._reserve(r, s, ctx + q)
            self._live[r.id] = r
        nd = len(batch.decodes)
        graph = self._graphs.get(self._bucket(nd)) if (self._graphs and nd == len(entries)) else None
        timing, out = self._run(entries, nd, graph)
        for (r, s, q, ctx), tok in zip(entries, out):
            s.written = ctx + q
            s.ctx_exec = ctx
            if ctx + q >= r.prefill_target and len(s.tokens) <= ctx + q:
                s.tokens.append(int(tok))
        self.last_tokens = out
        self.iterations += 1
        if graph is not None:
            self.graph_iterations += 1
        return timing

    def _run(self, entries, nd: int, graph=None, clock=None) -> tuple[IterationTiming, list[int]]:
        """The timed part of an iteration: input preparation, forward pass, sampled tokens on the host.

        ``clock`` (an :class:`~vidur.reference.layers.OpClock`, for the profiler)
        is ticked after the input preparation (``cpu_prepare``), every
        operator of the forward pass and the copy of the tokens to the host
        (``cpu_sample``).
        """
        torch = self.torch
        cuda = self.device_type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        if self._flush:
            torch.set_flush_denormal(True)
            try:
                return self._timed(entries, nd, graph, clock, cuda)
            finally:
                torch.set_flush_denormal(False)
        return self._timed(entries, nd, graph, clock, cuda)

    def _timed(self, entries, nd, graph, clock, cuda):
        torch = self.torch
        if cuda:
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        if clock is not None:
            clock.t = t0
        if graph is not None:
            self._fill_graph_inputs(graph, entries)
        else:
            inputs = self._prepare(entries, nd)
        if clock is not None:
            clock("cpu_prepare")
        if cuda:
            ev0.record()
        tf = time.perf_counter()
        if graph is not None:
            graph["graph"].replay()
            tokens = graph["tokens"][: len(entries)]
        else:
            with torch.inference_mode():
                tokens = self._forward(inputs, clock)
        if cuda:
            ev1.record()
        out = tokens.tolist()  # synchronises
        t1 = time.perf_counter()
        if clock is not None:
            clock("cpu_sample")
        forward_s = ev0.elapsed_time(ev1) / 1e3 if cuda else t1 - tf
        return IterationTiming(t1 - t0, forward_s), out

    def time_iteration(
        self,
        decodes: Iterable[int] = (),
        prefills: Iterable[tuple[int, int]] = (),
        *,
        repeats: int = 5,
        warmup: int = 1,
        max_s: float | None = None,
        min_repeats: int = 3,
        clock_overhead: float | None = None,
    ) -> list[dict[str, float]]:
        """Time a synthetic iteration operator by operator: what the profiler measures on CPU.

        ``decodes``: the cached context of each decoding request;
        ``prefills``: ``(chunk, context)`` of each prefill chunk. The
        sequences get random tokens and KV slots as requests would, and the
        iteration runs exactly as :meth:`execute` runs it (input preparation,
        embedding, every layer with this executor's KV layout and attention
        calls, LM head, tokens to the host), ``warmup + repeats`` times over
        the same inputs, with an :class:`~vidur.reference.layers.OpClock` ticking
        after every operator. Stops after ``min_repeats`` timed runs once
        ``max_s`` seconds have passed. Returns one dict per timed run:
        seconds per call of each operator (the layer operators per layer;
        ``add`` per call, two per layer; ``attn`` is attention), plus
        ``cpu_prepare`` and ``cpu_sample``. A host clock: exact on CPU; on
        CUDA it gives the host (launch) time of each operator.
        """
        from vidur.reference.layers import OpClock

        decodes = [int(c) for c in decodes]
        specs = [(1, c) for c in decodes] + [(int(q), int(c)) for q, c in prefills]
        if not specs:
            raise ValueError("time_iteration needs at least one decode or prefill")
        rng = np.random.default_rng((self.seed, len(specs)))
        seqs: list[SeqState] = []
        entries = []
        try:
            for q, ctx in specs:
                s = SeqState(rng.integers(0, self.vocab, size=ctx + q).tolist())
                seqs.append(s)
                self._reserve_slots(s, ctx + q, ctx + q, "a profiled sequence's")
                s.written = ctx
                entries.append((None, s, q, ctx))
            out: list[dict[str, float]] = []
            t_start = time.perf_counter()
            for i in range(warmup + repeats):
                clock = OpClock(clock_overhead)
                self._run(entries, len(decodes), None, clock)
                if i < warmup:
                    t_start = time.perf_counter()
                    continue
                out.append(clock.per_call())
                if max_s is not None and len(out) >= min_repeats and time.perf_counter() - t_start > max_s:
                    break
            return out
        finally:
            for s in seqs:
                self._drop_kv(s)

    def _forward(self, inp: dict, tick=None):
        """Embedding, the decoder layers (:func:`vidur.reference.layers.layer_forward`), final norm and LM head
        of the last token of each sequence, argmax: the operators of :mod:`vidur.reference.layers`."""
        ops = self._ops
        x, cos, sin = ops.embed_forward(inp["ids"], self.embed, inp["pos"], self.cos_cache, self.sin_cache, tick)
        kv = (PagedKV if self.attention == "paged" else FlashKV if self.kernel == "flash" else SdpaKV)(self, inp)
        shape = self.shape
        for li, w in enumerate(self.layers):
            x = ops.layer_forward(shape, x, w, cos, sin, kv, li, tick, self.experts_kernel or "loop")
        return ops.head_forward(
            self.model, x, inp["last"], self.final_norm, self.final_norm_bias, self.lm_head, self.lm_head_bias, tick
        )

    # -- warm-up and clean-up ---------------------------------------------------------
    def warmup(self, prefill_tokens: Iterable[int] = (8, 64, 256), decode_batches: Iterable[int] = (1, 4, 16), steps: int = 2) -> None:
        """Run throw-away iterations (lazy init, allocator, kernel selection) before timing anything.

        Also one chunk after cached context, whose first use pays one-off
        costs (on CPU, importing the lower-right causal mask takes ~1.5 s).
        """
        from vidur.entities.batch import Batch
        from vidur.entities.request import Request

        base = -1_000_000
        rid = base
        r = Request(rid, 0.0, min(32, self.max_pos - 4), 2)
        rid -= 1
        for q in (16, r.prompt - 16):  # a chunk, then a chunk after it
            b = Batch()
            b.add(r, q)
            self.execute(b)
            r.kv_len += q
        self._forget(r)
        for q in prefill_tokens:
            q = max(1, min(int(q), self.max_pos - 4))
            for _ in range(steps):
                r = Request(rid, 0.0, q, 2)
                rid -= 1
                b = Batch()
                b.add(r, q)
                self.execute(b)
                self._forget(r)
        for n in decode_batches:
            reqs = [Request(rid - i, 0.0, 16, 64) for i in range(int(n))]
            rid -= int(n)
            b = Batch()
            for r in reqs:
                b.add(r, 16)
            self.execute(b)
            for r in reqs:
                r.kv_len = 16
            for _ in range(steps):
                b = Batch()
                for r in reqs:
                    b.add(r, 1)
                self.execute(b)
                for r in reqs:
                    r.kv_len += 1
            for r in reqs:
                self._forget(r)
        self.iterations = 0
        self.graph_iterations = 0

    def _forget(self, req) -> None:
        s = self.seqs.pop(req.id, None)
        if s is not None:
            self._drop_kv(s)
        self._live.pop(req.id, None)

    def release(self) -> None:
        """Drop every request's KV (end of a run)."""
        for rid in list(self.seqs):
            self._drop_kv(self.seqs.pop(rid))
        self._live = {}
