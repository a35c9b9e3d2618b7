"""Runtime-estimator interface and the batch shape it prices.

The simulator never hands an estimator per-request lists: a batch is reduced
to a few aggregates (:class:`BatchShape`) that fully determine the cost of
token-level operators (they depend on the token count only) and of attention
(prefill by the causal query×key work, decode by the KV cache read).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar

import attrs
import numpy as np

from vidur.hardware.spec import DeviceSpec, NodeSpec
from vidur.model.spec import ModelSpec


class BatchShape:
    """Aggregates of one iteration's work on one replica.

    - ``num_tokens``: all query tokens in the batch (prefill chunks + decodes).
    - ``num_prefill``: requests processing a prefill chunk.
    - ``prefill_tokens``: Σ chunk lengths q.
    - ``prefill_work``: Σ q·(ctx + (q+1)/2), causal query×key pairs, where ctx
      is the tokens already in the KV cache before this chunk.
    - ``prefill_kv``: Σ (ctx + q), KV entries the prefill chunks attend to.
    - ``prefill_sq``: Σ q², for estimators that price chunks non-linearly.
    - ``num_decode``: requests decoding one token.
    - ``decode_kv``: Σ (ctx + 1) over decodes, KV entries read.
    """

    __slots__ = (
        "num_tokens",
        "num_prefill",
        "prefill_tokens",
        "prefill_work",
        "prefill_kv",
        "prefill_sq",
        "num_decode",
        "decode_kv",
    )

    def __init__(
        self,
        num_prefill: int = 0,
        prefill_tokens: int = 0,
        prefill_work: float = 0.0,
        prefill_kv: int = 0,
        prefill_sq: int = 0,
        num_decode: int = 0,
        decode_kv: int = 0,
    ):
        self.num_prefill = num_prefill
        self.prefill_tokens = prefill_tokens
        self.prefill_work = prefill_work
        self.prefill_kv = prefill_kv
        self.prefill_sq = prefill_sq
        self.num_decode = num_decode
        self.decode_kv = decode_kv
        self.num_tokens = prefill_tokens + num_decode

    @property
    def num_seqs(self) -> int:
        return self.num_prefill + self.num_decode

    @classmethod
    def from_lists(cls, prefills=(), decodes=()) -> "BatchShape":
        """Build from ``prefills=[(chunk, ctx), ...]`` and ``decodes=[ctx, ...]``.

        ``ctx`` is the number of tokens already cached for that request.
        """
        s = cls()
        for q, ctx in prefills:
            s.add_prefill(int(q), int(ctx))
        for ctx in decodes:
            s.add_decode(int(ctx))
        return s

    def add_prefill(self, q: int, ctx: int) -> None:
        self.num_prefill += 1
        self.prefill_tokens += q
        self.prefill_work += q * (ctx + (q + 1) / 2)
        self.prefill_kv += ctx + q
        self.prefill_sq += q * q
        self.num_tokens += q

    def add_decode(self, ctx: int) -> None:
        self.num_decode += 1
        self.decode_kv += ctx + 1
        self.num_tokens += 1

    def add_decodes(self, count: int, ctx: int) -> None:
        """``count`` decodes of ``ctx`` cached tokens each: ``add_decode(ctx)`` ``count`` times, in
        constant time (``vidur estimate --decode BATCH:CONTEXT``)."""
        self.num_decode += count
        self.decode_kv += count * (ctx + 1)
        self.num_tokens += count

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__)
        return f"BatchShape({fields})"


@attrs.frozen
class PricingTarget:
    """The replica an estimator is asked to price, as ``runtime_estimator: auto`` presents it to
    :meth:`RuntimeEstimator.can_price`: model, device, node, TP and PP degrees, and the engine mode
    the run asks for (``cluster.engine_mode``, or the reference executor's in ``vidur validate``;
    None: not said), and a profile directory the user named (``vidur estimate --profile``; None:
    find one). ``engine``: the serving engine whose kernels the run is meant to price (the replica
    scheduler's ``models_engine``, e.g. ``"vLLM V1"``; None: not said): a profile measured on
    other kernels (vidur's reference executor) does not price it under ``auto``."""

    model: ModelSpec
    device: DeviceSpec
    node: NodeSpec
    tp: int = 1
    pp: int = 1
    engine_mode: str | None = None
    profile: str | None = None
    engine: str | None = None


@attrs.frozen
class Offer:
    """An estimator's answer to ``auto``: it can price the target with ``config``, whose numbers come
    from ``source`` (a profile directory or calibration file; None: the estimator's own defaults),
    or it cannot. ``reason`` says why, in a few words that the run header prints."""

    ok: bool
    reason: str
    config: Any = None
    source: str | None = None

    @classmethod
    def accept(cls, config: Any, reason: str, source: str | None = None) -> "Offer":
        """This estimator prices the target with ``config``."""
        return cls(True, reason, config, None if source is None else str(source))

    @classmethod
    def decline(cls, reason: str) -> "Offer":
        """This estimator cannot price the target; ``reason`` says what is missing."""
        return cls(False, reason)


class RuntimeEstimator:
    """Prices one iteration of one replica's model shard.

    Subclasses set ``name`` and ``Config`` and implement :meth:`layer_time`
    and :meth:`head_time`; the rest has sensible defaults. All times are in
    seconds. An estimator is built once per replica configuration and then
    called from the event loop, so keep calls cheap (cache token-level costs
    by token count; avoid per-call numpy on tiny inputs).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = attrs.make_class("Config", {}, frozen=True)
    #: rank in ``runtime_estimator: auto``: the accepting estimator with the highest priority prices
    #: the run (built-ins: ``profile`` 100, ``roofline`` 0); None: ``auto`` never picks this one
    auto_priority: ClassVar[int | None] = None

    @classmethod
    def can_price(cls, target: PricingTarget) -> Offer:
        """Whether ``auto`` may pick this estimator for ``target``, with which ``Config`` and why.

        Called only when :attr:`auto_priority` is set, once per simulation setup (never in the event
        loop). Decline with the reason when data is missing (``Offer.decline("no profile of ...")``):
        ``auto`` then falls back to the next estimator and says why. Default: accept with the
        default ``Config``.
        """
        return Offer.accept(cls.Config(), "default configuration")

    def __init__(self, config, model: ModelSpec, device: DeviceSpec, node: NodeSpec, tp: int, pp: int):
        self.config = config
        self.model = model
        self.device = device
        self.node = node
        self.tp = tp
        self.pp = pp

    #: a short human description ("roofline (analytical)", "profile h100/...")
    def describe(self) -> str:
        return self.name

    def data_source(self) -> str | None:
        """The file or directory this estimator's numbers come from (a profile, a calibration), for the
        run's provenance record; None: its own defaults."""
        return None

    def layer_time(self, shape: BatchShape) -> float:
        """Device time of one decoder layer on one TP rank, TP all-reduces included."""
        raise NotImplementedError

    def head_time(self, num_seqs: int) -> float:
        """Final norm + LM head (+ sampling) for ``num_seqs`` sequences, on the last stage."""
        raise NotImplementedError

    def embed_time(self, num_tokens: int) -> float:
        """Embedding lookup on the first stage; default 0."""
        return 0.0

    def pp_transfer_time(self, num_tokens: int) -> float:
        """Send/recv of activations between two pipeline stages; default 0."""
        return 0.0

    def cpu_overhead(self, num_seqs: int) -> float:
        """Per-iteration host overhead (scheduling, input prep, launches, sampling)."""
        return 0.0

    def use_cuda_graphs(self, sizes, decode_only: bool = False) -> None:
        """The engine runs batches of at most ``max(sizes)`` tokens as CUDA graphs padded to the
        next captured size (vLLM's ``cudagraph_capture_sizes``): estimators that price
        token-level work by token count price the padded count. ``decode_only``: only
        decode-only batches run as graphs (SGLang's ``cuda_graph_max_bs``, the reference
        executor); batches with a prefill run eagerly at their own size (vLLM V1 also pads
        mixed batches: its piecewise graphs). Called before pricing; a later call replaces an
        earlier one (empty ``sizes``: no batch runs as a graph); the default ignores it."""

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        """Per-operator device time of one layer (seconds), for reports."""
        return {"layer": self.layer_time(shape)}

    # -- composition used by the simulator --------------------------------
    def stage_time(self, shape: BatchShape, stage: int, num_layers: int) -> float:
        """Device time of pipeline stage ``stage`` owning ``num_layers`` layers."""
        t = num_layers * self.layer_time(shape)
        if stage == 0:
            t += self.embed_time(shape.num_tokens)
        if stage == self.pp - 1:
            t += self.head_time(shape.num_seqs)
        return t

    def forward_time(self, shape: BatchShape) -> float:
        """Device time of the whole forward pass (all stages back to back)."""
        return (
            self.model.num_layers * self.layer_time(shape)
            + self.embed_time(shape.num_tokens)
            + self.head_time(shape.num_seqs)
            + (self.pp - 1) * self.pp_transfer_time(shape.num_tokens)
        )

    def decode_iteration_time(self, num_decode: int, decode_kv: int) -> float:
        """One decode-only iteration's wall time; must equal the matching element
        of :meth:`decode_iteration_times` bit for bit (override only with the
        same arithmetic, to skip numpy's per-call overhead)."""
        return float(self.decode_iteration_times(num_decode, np.array([decode_kv], dtype=np.float64))[0])

    def decode_pricer(self, num_decode: int) -> Callable[[int], float]:
        """:meth:`decode_iteration_time` for a fixed ``num_decode``, as a function of
        ``decode_kv`` (fast-forward's scalar loop calls it once per repetition). It must give
        exactly ``decode_iteration_time``'s values; override only to fetch what does not depend
        on the KV once."""
        return functools.partial(self.decode_iteration_time, num_decode)

    def decode_iteration_times(self, num_decode: int, decode_kv: np.ndarray) -> np.ndarray:
        """Wall time (device + CPU overhead, pp=1) of consecutive decode-only iterations.

        ``decode_kv[i]`` is the batch's Σ(ctx+1) at iteration i. Used by the
        simulator's fast-forward; override with a vectorised version. The
        result must equal calling :meth:`forward_time` + :meth:`cpu_overhead`
        iteration by iteration.
        """
        out = np.empty(len(decode_kv))
        for i, kv in enumerate(decode_kv):
            s = BatchShape(num_decode=num_decode, decode_kv=int(kv))
            out[i] = self.forward_time(s) + self.cpu_overhead(num_decode)
        return out


def apply_policy_cuda_graphs(estimator: RuntimeEstimator, scheduler) -> None:
    """Tell ``estimator`` the batch sizes the replica scheduler's engine runs as CUDA graphs
    (``cuda_graph_sizes``; ``cuda_graph_decode_only``: decode-only batches only), as ``vidur run``
    and ``vidur estimate --scheduler`` both price them; a policy without them changes nothing."""
    sizes = getattr(scheduler, "cuda_graph_sizes", None)
    if sizes:
        estimator.use_cuda_graphs(sizes, decode_only=bool(getattr(scheduler, "cuda_graph_decode_only", False)))
