"""Roofline runtime estimator: device specs + analytical operator costs.

Each operator of a decoder layer (tables in :mod:`vidur.model.cost`) takes
``max(FLOPs / (peak × compute eff.), bytes / (bandwidth × memory eff.)) +
launch overhead``; a layer adds two tensor-parallel all-reduces (ring, from
:mod:`vidur.hardware.collective`) when ``tp > 1``. It needs no profiling,
so it prices any model on any device — the fallback when no profile exists.

Default efficiencies (README "Roofline defaults and their sources" has the table):
``compute_efficiency`` 0.70 and ``elementwise_efficiency`` 0.5 were calibrated
against Vidur's measured token-level operator times on A100, A40 and H100
(``benchmarks/bench_roofline_accuracy.py``); the bandwidth and attention
efficiencies follow what current kernels are published to reach:
``memory_efficiency`` 0.85 (weight streaming at small batch; sustained DRAM
bandwidth of STREAM-like copies is about 90 % of the datasheet figure on HBM
parts; a device may carry its own published figure, e.g. 0.97 on the GDDR6X
RTX 4090, see :mod:`vidur.hardware.catalog`),
``decode_attention_efficiency`` 0.80 (paged decode attention: FlashInfer
reports its paged "vector-sparse" kernels at 90 % of the bandwidth of its
dense ones, which themselves run near the bandwidth roofline),
``prefill_attention_efficiency`` 0.65 (FlashAttention-2: 50-73 % of peak
FLOP/s on A100, arXiv 2307.08691; FlashAttention-3: up to 75 % on H100,
arXiv 2407.08608). :meth:`RooflineEstimator.calibrate` refits them from
operator measurements, ``vidur calibrate`` from served requests.

Hot-path design: token-level costs are cached by token count, attention
costs are closed forms of the :class:`BatchShape` aggregates, and
:meth:`RooflineEstimator.decode_iteration_times` is a numpy version that
reproduces the scalar path operation by operation (bitwise equal).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterable

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape, Offer, PricingTarget, RuntimeEstimator
from vidur.fit.roofline import OpMeasurement, calibrated_config, fit_token_efficiencies, same_device_profile
from vidur.hardware.collective import (
    LinkParams,
    all_gather_time,
    all_to_all_time,
    all_reduce_time,
    link_params,
    send_recv_time,
)
from vidur.hardware.spec import DeviceSpec, NodeSpec
from vidur.model.catalog import check_parallelism
from vidur.model.cost import (
    LOGIT_BYTES,
    OpCost,
    embed_ops,
    head_ops,
    layer_kinds,
    layer_ops,
    rank_shape,
    routing_values,
)
from vidur.model.spec import ModelSpec

ENGINE_MODES = ("cuda_graphs", "eager")

#: per-engine-mode defaults for fields left at None
ENGINE_DEFAULTS = {
    # GPU-side gap per kernel inside a CUDA graph; host work per iteration
    # (scheduling, input preparation, sampling bookkeeping) of a vLLM-like engine
    "cuda_graphs": {"launch_overhead_s": 3e-6, "cpu_base_s": 1.0e-3, "cpu_per_seq_s": 10e-6},
    # eager PyTorch: each kernel also pays a host-side launch
    "eager": {"launch_overhead_s": 7e-6, "cpu_base_s": 1.5e-3, "cpu_per_seq_s": 15e-6},
}


def _unit(name: str):
    def check(instance, attribute, value):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value <= 1.0:
            raise VidurError(f"roofline {name} must be in (0, 1], got {value!r}")

    return check


def _non_negative_or_none(instance, attribute, value):
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
        raise VidurError(f"roofline {attribute.name} must be a non-negative number of seconds or null, got {value!r}")


def _non_negative(instance, attribute, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise VidurError(f"roofline {attribute.name} must be a non-negative number of seconds, got {value!r}")


def _unit_or_none(name: str):
    unit = _unit(name)

    def check(instance, attribute, value):
        if value is not None:
            unit(instance, attribute, value)

    return check


def _positive_or_none(instance, attribute, value):
    if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
        raise VidurError(f"roofline {attribute.name} must be a positive number or null, got {value!r}")


def _at_least_one(instance, attribute, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 1.0:
        raise VidurError(f"roofline {attribute.name} must be a number >= 1 (busiest rank / mean load), got {value!r}")


def _path_or_none(instance, attribute, value):
    if value is not None and (not isinstance(value, str) or not value):
        raise VidurError(f"roofline {attribute.name} must be a profile directory (a path) or null, got {value!r}")


def _engine_mode(instance, attribute, value):
    if value not in ENGINE_MODES:
        raise VidurError(f"roofline engine_mode must be one of {', '.join(ENGINE_MODES)}, got {value!r}")


#: weight-read bandwidth efficiency of a device without its own figure (HBM-class parts)
DEFAULT_MEMORY_EFFICIENCY = 0.85


def device_memory_efficiency(device: DeviceSpec) -> float:
    """The default ``memory_efficiency`` on ``device``: its own published figure, else the generic one."""
    return DEFAULT_MEMORY_EFFICIENCY if device.memory_efficiency is None else float(device.memory_efficiency)


@attrs.frozen
class RooflineConfig:
    """Efficiencies and overheads of the roofline estimator.

    - ``compute_efficiency``: achieved / peak FLOP/s of GEMMs.
    - ``memory_efficiency``: achieved / peak HBM bandwidth of GEMMs (weight reads); None
      (the default) takes the device's published figure when it has one
      (:attr:`DeviceSpec.memory_efficiency`, e.g. GDDR parts) else 0.85.
    - ``elementwise_efficiency``: achieved / peak bandwidth of norms,
      activations, rotary, residual adds, embedding, KV-cache writes.
    - ``prefill_attention_efficiency``: FLOP/s efficiency of prefill attention.
    - ``decode_attention_efficiency``: bandwidth efficiency of decode attention (KV reads).
    - ``prefill_attention_overhead_s`` / ``decode_attention_overhead_s``: fixed
      seconds one layer's attention call adds beyond the launch (setup
      kernels, split-KV reductions); 0 by default, fitted by calibration.
    - ``launch_overhead_s``, ``cpu_base_s``, ``cpu_per_seq_s``: None takes the
      ``engine_mode`` default (``cuda_graphs`` or ``eager``).
    - ``comm_bandwidth`` / ``comm_latency``: override the collective model's
      bottleneck link (bytes/s, s), e.g. with values fitted to measurements.
    - ``kv_dtype_bytes``: KV-cache element size (None: the model's dtype).
    - ``expert_imbalance``: load of the busiest expert-parallel rank over
      the mean (≥ 1; Switch Transformer's capacity factor), on top of the
      statistical spread of uniform top-k routing (:mod:`vidur.model.routing`).
    - ``calibrate_from``: a profile directory of the same device (any model):
      the five efficiencies and the launch overhead are fitted to its
      measurements (:mod:`vidur.fit.roofline`), replacing the values
      above. ``runtime_estimator: auto`` sets it when the scenario's model
      has no profile on its device but another model has.
    - ``calibration``: a calibration file (``vidur calibrate``, e.g. fitted
      to real vLLM runs) whose values replace the fields above; applied by
      the resolver (:mod:`vidur.resolve.estimator`) and named in the run's
      provenance. ``auto`` finds one by itself for its device and model.
    """

    engine_mode: str = attrs.field(default="cuda_graphs", validator=_engine_mode)
    compute_efficiency: float = attrs.field(default=0.70, validator=_unit("compute_efficiency"))
    memory_efficiency: float | None = attrs.field(default=None, validator=_unit_or_none("memory_efficiency"))
    elementwise_efficiency: float = attrs.field(default=0.5, validator=_unit("elementwise_efficiency"))
    prefill_attention_efficiency: float = attrs.field(default=0.65, validator=_unit("prefill_attention_efficiency"))
    decode_attention_efficiency: float = attrs.field(default=0.80, validator=_unit("decode_attention_efficiency"))
    prefill_attention_overhead_s: float = attrs.field(default=0.0, validator=_non_negative)
    decode_attention_overhead_s: float = attrs.field(default=0.0, validator=_non_negative)
    launch_overhead_s: float | None = attrs.field(default=None, validator=_non_negative_or_none)
    cpu_base_s: float | None = attrs.field(default=None, validator=_non_negative_or_none)
    cpu_per_seq_s: float | None = attrs.field(default=None, validator=_non_negative_or_none)
    comm_bandwidth: float | None = attrs.field(default=None, validator=_positive_or_none)
    comm_latency: float | None = attrs.field(default=None, validator=_non_negative_or_none)
    kv_dtype_bytes: int | None = attrs.field(default=None, validator=_positive_or_none)
    expert_imbalance: float = attrs.field(default=1.0, validator=_at_least_one)
    calibrate_from: str | None = attrs.field(default=None, validator=_path_or_none)
    calibration: str | None = attrs.field(default=None, validator=_path_or_none)

    def for_device(self, device: DeviceSpec) -> "RooflineConfig":
        """This config with ``memory_efficiency`` filled in when None: the device's published
        figure (:attr:`DeviceSpec.memory_efficiency`) or :data:`DEFAULT_MEMORY_EFFICIENCY`."""
        if self.memory_efficiency is not None:
            return self
        return attrs.evolve(self, memory_efficiency=device_memory_efficiency(device))

    def resolved(self, field: str) -> float:
        """A field's value, or its ``engine_mode`` default when None."""
        value = getattr(self, field)
        return ENGINE_DEFAULTS[self.engine_mode][field] if value is None else value


class RooflineEstimator(RuntimeEstimator):
    """Analytical estimator: per-operator roofline from device peak FLOP/s and bandwidth."""

    name: ClassVar[str] = "roofline"
    Config: ClassVar[type] = RooflineConfig
    auto_priority: ClassVar[int | None] = 0  # prices anything: the fallback of ``auto``

    @classmethod
    def can_price(cls, target: PricingTarget) -> Offer:
        """``auto``: always; calibrated on a profile of the same device (another model or TP degree) when
        one exists (:func:`vidur.fit.roofline.same_device_profile`), else with the default efficiencies.
        When the run prices an engine's kernels (``target.engine``: vLLM V1, SGLang), the defaults
        stand: they model the engine, and a profile of vidur's executor would pull them towards
        PyTorch's unfused operators."""
        from vidur.store.profiles import prices_engine

        source = same_device_profile(target.device.name, target.model.name)
        if source is not None and not prices_engine(source, target.engine):
            return Offer.accept(
                RooflineConfig(),
                f"roofline with default efficiencies, which model {target.engine} (not calibrated on the "
                f"{target.device.name} profile: it times vidur's profiled PyTorch operators)",
            )
        if source is not None:
            return Offer.accept(
                RooflineConfig(calibrate_from=source), f"roofline calibrated on a {target.device.name} profile (another model or TP degree)", source=source
            )
        return Offer.accept(RooflineConfig(), f"roofline with default efficiencies (no {target.device.name} profile to calibrate on)")

    def __init__(self, config, model: ModelSpec, device: DeviceSpec, node: NodeSpec, tp: int, pp: int):
        super().__init__(config, model, device, node, tp, pp)
        check_parallelism(model, tp, pp, node)
        #: the calibration's report (MAPE before/after on its profile) when ``calibrate_from`` is set
        self.calibration: dict | None = None
        config = self.config = config.for_device(device)
        if config.calibrate_from:
            fitted, self.calibration = calibrated_config(config.calibrate_from, device, node, config, type(self))
            config = self.config = attrs.evolve(fitted, calibrate_from=config.calibrate_from)
        c = config
        self._launch = float(c.resolved("launch_overhead_s"))
        self._p_fixed = self._launch + float(c.prefill_attention_overhead_s)  # one prefill attention call
        self._d_fixed = self._launch + float(c.decode_attention_overhead_s)  # one decode attention call
        self._cpu_base = float(c.resolved("cpu_base_s"))
        self._cpu_per_seq = float(c.resolved("cpu_per_seq_s"))
        peak, bw = device.peak_flops, device.memory_bandwidth
        self._rate = {  # kind -> (FLOP/s, bytes/s)
            "gemm": (peak * c.compute_efficiency, bw * c.memory_efficiency),
            "elementwise": (peak * c.compute_efficiency, bw * c.elementwise_efficiency),
            "attn_prefill": (peak * c.prefill_attention_efficiency, bw * c.memory_efficiency),
            "attn_decode": (peak * c.compute_efficiency, bw * c.decode_attention_efficiency),
        }
        self.layer_ops = layer_ops(model, tp, c.kv_dtype_bytes, moe=model.num_dense_layers_or_all() == 0)
        self.head_ops = head_ops(model, tp)
        self.embed_ops = embed_ops(model, tp)
        #: (layer count, ops) per MLP kind (dense / MoE); ``layer_ops`` is the most common kind's
        self.kind_ops = [(k.count, k.moe, layer_ops(model, tp, c.kv_dtype_bytes, moe=k.moe)) for k in layer_kinds(model)]
        self.imbalance = float(c.expert_imbalance)

        attention = ("attn_prefill", "attn_decode")
        self._kinds = [
            (count, moe, [self._token_coeffs(op) for op in ops if op.kind not in attention])
            for count, moe, ops in self.kind_ops
        ]
        prefill = [op for op in self.layer_ops if op.kind == "attn_prefill"]
        decode = [op for op in self.layer_ops if op.kind == "attn_decode"]
        if len(prefill) != 1 or len(decode) != 1:
            raise AssertionError("layer_ops must be token-level operators plus one prefill and one decode attention")
        pf, pm = self._rate["attn_prefill"]
        p = prefill[0]
        self._p_work = p.coef("flops", "prefill_work") / pf
        self._p_fkv = p.coef("flops", "prefill_kv") / pf  # MLA: decompressing the attended latent
        self._p_tok = p.coef("bytes", "prefill_tokens") / pm
        self._p_kv = p.coef("bytes", "prefill_kv") / pm
        df, dm = self._rate["attn_decode"]
        d = decode[0]
        self._d_flop = d.coef("flops", "decode_kv") / df
        self._d_fseq = d.coef("flops", "num_decode") / df  # MLA: absorbed projections per token
        self._d_kv = d.coef("bytes", "decode_kv") / dm
        self._d_seq = d.coef("bytes", "num_decode") / dm
        # sliding-window layers: the same attention on window-bounded aggregates
        self._W = model.num_window_layers
        self._F = model.num_full_layers
        self._win = model.sliding_window
        #: dense attention without windows or MLA terms: the inlined hot paths apply
        self._plain = not self._W and self._p_fkv == 0.0 and self._d_fseq == 0.0

        # communication
        b = model.dtype_bytes
        self._act_bytes = model.hidden_size * b  # one token's hidden state
        self._vocab_rank = rank_shape(model, tp).vocab
        params = None
        if c.comm_bandwidth is not None or c.comm_latency is not None:
            nominal = link_params(node, tp)
            params = LinkParams(
                c.comm_bandwidth if c.comm_bandwidth is not None else nominal.bandwidth,
                c.comm_latency if c.comm_latency is not None else nominal.latency,
            )
        self._comm = params
        self._pp_inter_node = tp * pp > node.num_devices
        self._ep = model.expert_parallel

        self._L = float(model.num_layers)
        self._graph_sizes: np.ndarray | None = None  # CUDA-graph capture sizes (use_cuda_graphs)
        self._graphs_decode_only = False  # only decode-only batches run as graphs (use_cuda_graphs)
        self._eager_tok_cache: dict[int, float] = {}
        self._tok_cache: dict[int, float] = {}
        self._pricers: dict[int, Callable[[int], float]] = {}  # decode_pricer's, per batch size
        self._embed_cache: dict[int, float] = {}
        self._head_cache: dict[int, float] = {}
        self._ppx_cache: dict[int, float] = {}
        #: forward_time may inline its parts: plain attention arithmetic and none of them overridden
        R = RooflineEstimator
        self._inline_forward = self._plain and all(
            getattr(type(self), f) is getattr(R, f) for f in ("layer_time", "embed_time", "head_time", "_pp_total")
        )

    # -- building blocks ------------------------------------------------------
    def _token_coeffs(self, op: OpCost) -> tuple:
        """(count, s at 0 tokens / per token / per routed assignment / per active expert, for compute then memory)."""
        f, m = self._rate[op.kind]
        return (
            op.count,
            op.coef("flops", "one") / f,
            op.coef("flops", "tokens") / f,
            op.coef("flops", "assigned") / f,
            op.coef("flops", "experts") / f,
            op.coef("bytes", "one") / m,
            op.coef("bytes", "tokens") / m,
            op.coef("bytes", "assigned") / m,
            op.coef("bytes", "experts") / m,
        )

    def _values(self, shape: BatchShape) -> dict:
        n = shape.num_tokens
        assigned, experts = routing_values(self.model, n, self.imbalance)
        return {
            "one": 1,
            "tokens": n,
            "prefill_tokens": shape.prefill_tokens,
            "prefill_work": shape.prefill_work,
            "prefill_kv": shape.prefill_kv,
            "num_decode": shape.num_decode,
            "decode_kv": shape.decode_kv,
            "seqs": shape.num_seqs,
            "assigned": assigned,
            "experts": experts,
        }

    def _op_time(self, op: OpCost, values: dict) -> float:
        """Time of ``op.count`` calls of an operator for aggregate ``values`` (0 if idle)."""
        flops, nbytes = op.evaluate(values)
        if flops <= 0 and nbytes <= 0:
            return 0.0
        if op.kind == "gemm" and values.get("tokens", 0) == 0 and values.get("seqs", 0) == 0:
            return 0.0
        f, m = self._rate[op.kind]
        fixed = self._p_fixed if op.kind == "attn_prefill" else self._d_fixed if op.kind == "attn_decode" else self._launch
        return op.count * (max(flops / f, nbytes / m) + fixed)

    def all_reduce_time(self, num_tokens: int) -> float:
        """One TP all-reduce of ``num_tokens`` hidden states (0 when tp == 1)."""
        return all_reduce_time(self.node, self.tp, num_tokens * self._act_bytes, self._comm)

    def moe_comm_time(self, num_tokens: int) -> float:
        """Communication of one MoE layer's MLP (the attention's all-reduce excluded).

        EP 1: the TP all-reduce of a dense MLP. EP > 1: the tokens, split over
        the ``ep`` ranks, are dispatched to their ``k`` experts' ranks and the
        results combined back (two all-to-alls on the node's links), then
        every rank gathers all tokens again for the next attention (an
        all-gather; an all-reduce when experts or shared experts are also
        split tensor-parallel).
        """
        ep = self._ep
        if ep == 1:
            return self.all_reduce_time(num_tokens)
        m = self.model
        per_rank = num_tokens / ep * m.experts_per_token * self._act_bytes
        t = 2.0 * all_to_all_time(self.node, ep, per_rank, self._comm)
        if self.tp > ep or m.shared_expert_intermediate_size:
            return t + self.all_reduce_time(num_tokens)
        return t + all_gather_time(self.node, ep, num_tokens * self._act_bytes, self._comm)

    def _kind_time(self, n: int, moe: bool, coeffs) -> float:
        launch = self._launch
        t = 0.0
        if moe:
            a, e = routing_values(self.model, n, self.imbalance)
            for count, f0, f1, fa, fe, m0, m1, ma, me in coeffs:
                c = f0 + f1 * n + fa * a + fe * e
                m = m0 + m1 * n + ma * a + me * e
                t += count * ((c if c > m else m) + launch)
            if self._ep == 1:  # the dense layer's two all-reduces (bit for bit)
                return t + 2.0 * self.all_reduce_time(n)
            return t + self.all_reduce_time(n) + self.moe_comm_time(n)
        for count, f0, f1, _, _, m0, m1, _, _ in coeffs:
            c = f0 + f1 * n
            m = m0 + m1 * n
            t += count * ((c if c > m else m) + launch)
        return t + 2.0 * self.all_reduce_time(n)

    def use_cuda_graphs(self, sizes, decode_only: bool = False) -> None:
        """Price token-level work of batches of at most ``max(sizes)`` tokens at the next captured size
        (empty ``sizes``: none); ``decode_only``: batches with a prefill at their own size."""
        g = np.array(sorted({int(s) for s in sizes}), dtype=np.int64)
        self._graph_sizes = g if g.size else None
        self._graphs_decode_only = bool(decode_only) and self._graph_sizes is not None
        self._tok_cache.clear()
        self._eager_tok_cache.clear()
        self._pricers.clear()

    def _eager_token_time(self, num_tokens: int) -> float:
        """:meth:`_token_time` of a batch that runs eagerly, unpadded (a prefill under decode-only graphs)."""
        t = self._eager_tok_cache.get(num_tokens)
        if t is None:
            t = self._eager_tok_cache[num_tokens] = self._raw_token_time(num_tokens)
        return t

    def _token_time(self, num_tokens: int) -> float:
        """Token-level time of one layer (the mean over layer kinds), communication included;
        a batch that runs as a CUDA graph is priced at its padded size."""
        t = self._tok_cache.get(num_tokens)
        if t is None:
            n = num_tokens
            g = self._graph_sizes
            if g is not None and 0 < n <= g[-1]:
                n = int(g[np.searchsorted(g, n)])
            t = self._tok_cache[num_tokens] = self._raw_token_time(n)
        return t

    def _raw_token_time(self, n: int) -> float:
        """Token-level time of one layer for exactly ``n`` tokens (no padding, no cache)."""
        if n <= 0:
            return 0.0
        if len(self._kinds) == 1:
            return self._kind_time(n, self._kinds[0][1], self._kinds[0][2])
        return sum(count * self._kind_time(n, moe, coeffs) for count, moe, coeffs in self._kinds) / self._L

    def _prefill_attention(self, npf: int, ptok: int, work: float, pkv: int) -> float:
        """One layer's prefill attention (the mean over full and sliding-window layers)."""
        c = work * self._p_work + pkv * self._p_fkv
        m = ptok * self._p_tok + pkv * self._p_kv
        t = (c if c > m else m) + self._p_fixed
        if self._W:
            w = self._win
            work_w = min(work, ptok * w)
            pkv_w = min(pkv, npf * w + ptok)
            c = work_w * self._p_work + pkv_w * self._p_fkv
            m = ptok * self._p_tok + pkv_w * self._p_kv
            tw = (c if c > m else m) + self._p_fixed
            t = tw if not self._F else (self._F * t + self._W * tw) / self._L
        return t

    def _decode_attention(self, n: int, kv):
        """One layer's decode attention for ``n`` decodes reading ``kv`` entries (scalar or array)."""
        if isinstance(kv, np.ndarray):
            c = kv * self._d_flop + n * self._d_fseq
            m = kv * self._d_kv + n * self._d_seq
            t = np.maximum(c, m) + self._d_fixed
            if self._W:
                kw = np.minimum(kv, n * self._win)
                tw = np.maximum(kw * self._d_flop + n * self._d_fseq, kw * self._d_kv + n * self._d_seq) + self._d_fixed
                t = tw if not self._F else (self._F * t + self._W * tw) / self._L
            return t
        c = kv * self._d_flop + n * self._d_fseq
        m = kv * self._d_kv + n * self._d_seq
        t = (c if c > m else m) + self._d_fixed
        if self._W:
            kw = min(kv, n * self._win)
            c = kw * self._d_flop + n * self._d_fseq
            m = kw * self._d_kv + n * self._d_seq
            tw = (c if c > m else m) + self._d_fixed
            t = tw if not self._F else (self._F * t + self._W * tw) / self._L
        return t

    # -- RuntimeEstimator API ---------------------------------------------------
    def data_source(self) -> str | None:
        """The profile it was calibrated on (``calibrate_from``), if any."""
        return self.config.calibrate_from or None

    def describe(self) -> str:
        """``roofline (analytical; <device>, compute x%, memory y%, <engine mode>[, calibrated on P])``."""
        c = self.config
        cal = f", calibrated on {self.calibration['profile']}" if self.calibration else ""
        return (
            f"roofline (analytical; {self.device.name}, compute {c.compute_efficiency:.0%}, "
            f"memory {c.memory_efficiency:.0%}, {c.engine_mode}{cal})"
        )

    def attention_fixed(self, kind: str) -> float:
        """Fixed seconds of one layer's ``attn_prefill`` / ``attn_decode`` call (launch plus overhead)."""
        return self._p_fixed if kind == "attn_prefill" else self._d_fixed

    def attention_bounds(self, kind: str, batch, chunk, context) -> tuple[np.ndarray, np.ndarray]:
        """(compute-bound, memory-bound) seconds of one layer's attention over ``batch`` equal requests,
        without the launch: ``kind`` ``attn_prefill`` (``chunk`` new tokens after ``context``) or
        ``attn_decode`` (one token after ``context``). Array arguments give arrays. A full-attention
        layer's (sliding windows are not applied)."""
        b = np.asarray(batch, dtype=np.float64)
        ctx = np.asarray(context, dtype=np.float64)
        if kind == "attn_prefill":
            q = np.asarray(chunk, dtype=np.float64)
            pkv = b * (ctx + q)
            return b * q * (ctx + (q + 1) / 2) * self._p_work + pkv * self._p_fkv, b * q * self._p_tok + pkv * self._p_kv
        if kind == "attn_decode":
            kv = b * (ctx + 1)
            return kv * self._d_flop + b * self._d_fseq, kv * self._d_kv + b * self._d_seq
        raise ValueError(f"unknown attention kind {kind!r}")

    def layer_time(self, shape: BatchShape) -> float:
        """Device time of one decoder layer on one TP rank, TP all-reduces included."""
        if shape.num_prefill and self._graphs_decode_only:
            t = self._eager_token_time(shape.num_tokens)
        else:
            t = self._tok_cache.get(shape.num_tokens)
            if t is None:
                t = self._token_time(shape.num_tokens)
        if not self._plain:
            if shape.num_prefill:
                t += self._prefill_attention(shape.num_prefill, shape.prefill_tokens, shape.prefill_work, shape.prefill_kv)
            if shape.num_decode:
                t += self._decode_attention(shape.num_decode, shape.decode_kv)
            return t
        if shape.num_prefill:
            c = shape.prefill_work * self._p_work
            m = shape.prefill_tokens * self._p_tok + shape.prefill_kv * self._p_kv
            t += (c if c > m else m) + self._p_fixed
        if shape.num_decode:
            kv = shape.decode_kv
            c = kv * self._d_flop
            m = kv * self._d_kv + shape.num_decode * self._d_seq
            t += (c if c > m else m) + self._d_fixed
        return t

    def embed_time(self, num_tokens: int) -> float:
        """Embedding lookup plus its vocab-parallel all-reduce (tp > 1)."""
        t = self._embed_cache.get(num_tokens)
        if t is None:
            values = {"one": 1, "tokens": num_tokens}
            t = sum(self._op_time(op, values) for op in self.embed_ops) if num_tokens > 0 else 0.0
            t += self.all_reduce_time(num_tokens)
            self._embed_cache[num_tokens] = t
        return t

    def head_time(self, num_seqs: int) -> float:
        """Final norm, LM head (vocab / tp), logit gather (tp > 1) and sampling."""
        t = self._head_cache.get(num_seqs)
        if t is None:
            t = 0.0
            if num_seqs > 0:
                values = {"one": 1, "seqs": num_seqs}
                t = sum(self._op_time(op, values) for op in self.head_ops)
                t += all_gather_time(self.node, self.tp, num_seqs * self._vocab_rank * self.tp * LOGIT_BYTES, self._comm)
            self._head_cache[num_seqs] = t
        return t

    def pp_transfer_time(self, num_tokens: int) -> float:
        """Send/recv of the hidden states between stages (inter-node when tp×pp exceeds a node)."""
        return send_recv_time(self.node, num_tokens * self._act_bytes, inter_node=self._pp_inter_node)

    def _pp_total(self, num_tokens: int) -> float:
        t = self._ppx_cache.get(num_tokens)
        if t is None:
            t = (self.pp - 1) * self.pp_transfer_time(num_tokens)
            self._ppx_cache[num_tokens] = t
        return t

    def cpu_overhead(self, num_seqs: int) -> float:
        """Host time per iteration: ``cpu_base_s + cpu_per_seq_s × num_seqs``."""
        return self._cpu_base + self._cpu_per_seq * num_seqs

    def forward_time(self, shape: BatchShape) -> float:
        """Device time of the whole forward pass (all stages back to back)."""
        n = shape.num_tokens
        if not self._inline_forward:
            return (
                self._L * self.layer_time(shape)
                + self.embed_time(n)
                + self.head_time(shape.num_seqs)
                + self._pp_total(n)
            )
        # layer_time, embed_time, head_time and _pp_total inlined (the event loop prices every batch
        # here): the same operations in the same order, so the same values
        if shape.num_prefill and self._graphs_decode_only:
            t = self._eager_token_time(n)
        else:
            t = self._tok_cache.get(n)
            if t is None:
                t = self._token_time(n)
        if shape.num_prefill:
            c = shape.prefill_work * self._p_work
            m = shape.prefill_tokens * self._p_tok + shape.prefill_kv * self._p_kv
            t += (c if c > m else m) + self._p_fixed
        nd = shape.num_decode
        if nd:
            kv = shape.decode_kv
            c = kv * self._d_flop
            m = kv * self._d_kv + nd * self._d_seq
            t += (c if c > m else m) + self._d_fixed
        e = self._embed_cache.get(n)
        if e is None:
            e = self.embed_time(n)
        seqs = shape.num_prefill + nd
        h = self._head_cache.get(seqs)
        if h is None:
            h = self.head_time(seqs)
        p = self._ppx_cache.get(n)
        if p is None:
            p = self._pp_total(n)
        return self._L * t + e + h + p

    def decode_iteration_time(self, num_decode: int, decode_kv: int) -> float:
        """Scalar twin of :meth:`decode_iteration_times`: ``forward_time + cpu_overhead`` of a decode-only
        batch, inlined (the event loop's hottest call; the same operations in the same order)."""
        n = num_decode
        if n <= 0:
            return self.forward_time(BatchShape(num_decode=n, decode_kv=decode_kv)) + self.cpu_overhead(n)
        t = self._tok_cache.get(n)
        if t is None:
            t = self._token_time(n)
        if self._plain:
            c = decode_kv * self._d_flop
            m = decode_kv * self._d_kv + n * self._d_seq
            t += (c if c > m else m) + self._d_fixed
        else:
            t += self._decode_attention(n, decode_kv)
        return self._L * t + self.embed_time(n) + self.head_time(n) + self._pp_total(n) + self.cpu_overhead(n)

    def decode_pricer(self, num_decode: int) -> Callable[[int], float]:
        """:meth:`decode_iteration_time` for a fixed ``num_decode`` as a function of ``decode_kv``:
        what does not depend on the KV is fetched once (the same operations in the same order,
        so the same values), and the function is kept per ``num_decode`` until the CUDA-graph
        sizes change."""
        price = self._pricers.get(num_decode)
        if price is not None:
            return price
        n = num_decode
        if n <= 0 or not self._plain or type(self).decode_iteration_time is not RooflineEstimator.decode_iteration_time:
            return super().decode_pricer(n)
        tok = self._tok_cache.get(n)
        if tok is None:
            tok = self._token_time(n)
        L, flop, per_kv, seq, fixed = self._L, self._d_flop, self._d_kv, n * self._d_seq, self._d_fixed
        e, h, p, cpu = self.embed_time(n), self.head_time(n), self._pp_total(n), self.cpu_overhead(n)

        def price(decode_kv: int) -> float:
            c = decode_kv * flop
            m = decode_kv * per_kv + seq
            return L * (tok + ((c if c > m else m) + fixed)) + e + h + p + cpu

        self._pricers[n] = price
        return price

    def decode_iteration_times(self, num_decode: int, decode_kv: np.ndarray) -> np.ndarray:
        """Vectorised ``forward_time + cpu_overhead`` of decode-only iterations (bitwise equal to the scalar path)."""
        kv = np.asarray(decode_kv, dtype=np.float64)
        n = int(num_decode)
        if n == 0:
            return np.full(kv.shape, self.forward_time(BatchShape()) + self.cpu_overhead(0))
        tok = self._token_time(n)
        if self._plain:
            c = kv * self._d_flop
            m = kv * self._d_kv + n * self._d_seq
            layer = tok + (np.maximum(c, m) + self._d_fixed)
        else:
            layer = tok + self._decode_attention(n, kv)
        return self._L * layer + self.embed_time(n) + self.head_time(n) + self._pp_total(n) + self.cpu_overhead(n)

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        """Per-operator seconds of one layer, the mean over layer kinds (``add`` covers both residual
        adds), plus ``tp_all_reduce`` and, with expert parallelism, ``ep_all_to_all``."""
        values = self._values(shape)
        out: dict[str, float] = {}
        n = shape.num_tokens
        for count, moe, ops in self.kind_ops:
            share = count / self._L
            for op in ops:
                if op.kind in ("attn_prefill", "attn_decode"):
                    continue
                out[op.name] = out.get(op.name, 0.0) + (share * self._op_time(op, values) if n else 0.0)
        out["attn_prefill"] = (
            self._prefill_attention(shape.num_prefill, shape.prefill_tokens, shape.prefill_work, shape.prefill_kv)
            if shape.num_prefill and n else 0.0
        )
        out["attn_decode"] = self._decode_attention(shape.num_decode, shape.decode_kv) if shape.num_decode and n else 0.0
        moe_share = self.model.num_moe_layers / self._L
        ar = self.all_reduce_time(n)
        if self._ep > 1:
            ep_comm = self.moe_comm_time(n)
            out["tp_all_reduce"] = (2.0 - moe_share) * ar
            out["ep_all_to_all"] = moe_share * ep_comm
        else:
            out["tp_all_reduce"] = 2.0 * ar
        return out

    # -- calibration --------------------------------------------------------------
    def token_op_time(self, op_name: str, num_tokens: int) -> float:
        """Predicted time of **one call** of token-level operator ``op_name`` (e.g. ``mlp_up_proj``; ``emb``)."""
        values = self._values(BatchShape(prefill_tokens=num_tokens, num_prefill=1 if num_tokens else 0))
        for _, _, ops in self.kind_ops:
            for op in ops + self.embed_ops:
                if op.name == op_name:
                    if op.kind not in ("gemm", "elementwise"):
                        raise VidurError(f"roofline has no token-level operator {op_name!r}")
                    return self._op_time(op, values) / op.count
        raise VidurError(f"roofline has no token-level operator {op_name!r}")

    @classmethod
    def calibrate(
        cls,
        measurements: Iterable[OpMeasurement],
        model: ModelSpec,
        device: DeviceSpec,
        base: RooflineConfig | None = None,
        rounds: int = 4,
        per_op_weight: float = 0.25,
    ) -> RooflineConfig:
        """``base`` with compute, memory and elementwise efficiencies and the launch overhead fitted to
        measured token-level operator times (:func:`vidur.fit.roofline.fit_token_efficiencies`)."""
        return fit_token_efficiencies(measurements, model, device, (base or RooflineConfig()).for_device(device), rounds, per_op_weight)
