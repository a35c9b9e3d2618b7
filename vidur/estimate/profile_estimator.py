"""The ``profile`` runtime estimator: fitted curves of measured operator times.

Built once per replica configuration from the profile found for (device,
model, tp) (:func:`vidur.store.profiles.find_profile`) or named in the
config; the fitted model comes from the profile's ``fitted.json`` or the
user cache when its data hash matches, and is fitted on the fly otherwise
(numpy only: neither torch nor scikit-learn is imported here).

Pricing one layer of a :class:`~vidur.estimate.base.BatchShape`:

- token-level operators and the two TP all-reduces: one lookup in a table
  precomputed for every token count up to the profiled maximum;
- prefill attention: ``n`` chunks are priced as ``n`` equal chunks of the
  mean length ``q̄ = Σq / n`` after a context that preserves the total
  causal work ``Σ q(ctx + (q+1)/2)``, times the measured batching factor;
- decode attention: the batch's mean context ``Σ(ctx+1)/n − 1``;
- eager launches: when the host issues a layer's kernels slower than the
  GPU runs them (eager mode, or a batch a CUDA graph does not cover) the
  layer takes the measured launch time instead.

Extrapolation past the profiled range never fails: token-level and
attention times scale in proportion to the work, and a warning says so once.
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape, Offer, PricingTarget, RuntimeEstimator
from vidur.estimate.comm import CommModel
from vidur.fit.curves import FittedShard, get_fitted
from vidur.store.profiles import (
    Profile,
    check_model_matches,
    find_pricing_profile,
    find_profile,
    load_profile,
    model_layer_ops,
    prices_engine,
)
from vidur.hardware.spec import DeviceSpec, NodeSpec
from vidur.model.spec import ModelSpec

ENGINE_MODES = ("cuda_graphs", "eager")


class ExtrapolationWarning(UserWarning):
    """A prediction left the profiled range (it is scaled, not measured)."""


def _engine_mode(instance, attribute, value):
    if value not in ENGINE_MODES:
        raise VidurError(f"profile estimator engine_mode must be one of {', '.join(ENGINE_MODES)}, got {value!r}")


def _positive_int(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise VidurError(f"profile estimator {attribute.name} must be a non-negative integer, got {value!r}")


@attrs.frozen
class ProfileConfig:
    """Options of the ``profile`` estimator.

    - ``profile``: a profile directory; default: the one found for the
      scenario's (device, model, tensor_parallel).
    - ``engine_mode``: ``cuda_graphs`` (decode batches up to
      ``cuda_graph_max_batch`` sequences replay a graph: no launch stalls) or
      ``eager`` (every layer pays the measured host launch time when it
      exceeds the GPU time).
    - ``warn_extrapolation``: warn once when a batch leaves the profiled range.
    """

    profile: str | None = None
    engine_mode: str = attrs.field(default="cuda_graphs", validator=_engine_mode)
    cuda_graph_max_batch: int = attrs.field(default=256, validator=_positive_int)
    warn_extrapolation: bool = True


class ProfileEstimator(RuntimeEstimator):
    """Runtime estimator fitted to measured per-operator times of one model on one device."""

    name: ClassVar[str] = "profile"
    Config: ClassVar[type] = ProfileConfig
    auto_priority: ClassVar[int | None] = 100  # measured data of this very model beats the roofline

    @classmethod
    def can_price(cls, target: PricingTarget) -> Offer:
        """``auto``: a profile of this device, model and TP degree that can price a whole batch (token-level
        operators and both attention kinds), or the profile the user named; else decline, saying why."""
        model, device, tp = target.model, target.device, target.tp
        from vidur.model.catalog import unprofiled_features

        missing = unprofiled_features(model)
        if missing:  # a profile of the dense bf16 checkpoint does not price this deployment
            return Offer.decline(f"profiles measure dense bf16/fp16 layers; {model.name} has {', '.join(missing)}")
        if target.profile:
            return Offer.accept(ProfileConfig(profile=str(target.profile)), "the profile given", source=target.profile)
        path, skipped = find_pricing_profile(device.name, model.name, tp)
        if path is not None and not prices_engine(path, target.engine):
            return Offer.decline(
                f"the {device.name} profile of {model.name} (tp={tp}) times vidur's profiled PyTorch operators, "
                f"not {target.engine}'s kernels (name it with runtime_estimator: profile to use it)"
            )
        if path is not None:
            return Offer.accept(ProfileConfig(profile=str(path)), f"a profile of {model.name} on {device.name} (tp={tp})", source=path)
        if skipped:
            return Offer.decline("; ".join(f"profile {s}" for s in skipped))
        return Offer.decline(f"no profile of {model.name} on {device.name} with tp={tp}")

    def __init__(self, config, model: ModelSpec, device: DeviceSpec, node: NodeSpec, tp: int, pp: int):
        super().__init__(config, model, device, node, tp, pp)
        from vidur.model.catalog import unprofiled_features

        missing = unprofiled_features(model)
        if missing:
            raise VidurError(
                f"profiles measure dense bf16/fp16 layers; {model.name} has {', '.join(missing)}: "
                f"use runtime_estimator: roofline"
            )
        if config.profile:
            path = Path(config.profile).expanduser()
        else:
            path = find_profile(device.name, model.name, tp)
            if path is None:
                raise VidurError(
                    f"no profile of {model.name} on {device.name} with tensor_parallel={tp}; "
                    f"run `vidur profile --model {model.name} --device cuda --tp {tp}` on that GPU, "
                    f"or use runtime_estimator: roofline"
                )
        self.profile: Profile = load_profile(path, tps=[tp])
        check_model_matches(self.profile, model)
        fitted = get_fitted(self.profile)
        self.fs: FittedShard = fitted.shards[tp]
        if model.is_moe and "experts" not in self.fs.token:
            raise VidurError(
                f"profile {path} has no 'experts' measurements for the mixture of experts {model.name}; "
                f"re-profile it with this version's `vidur profile`, or use runtime_estimator: roofline"
            )
        if self.fs.prefill is None or self.fs.decode is None:
            raise VidurError(
                f"profile {path} has no attention measurements (tp={tp}); "
                f"profile them with `vidur profile` or import a Vidur attention.csv"
            )
        self._warned: set[str] = set()
        self._eager = config.engine_mode == "eager"
        self._graph_max = config.cuda_graph_max_batch
        self._act_bytes = model.hidden_size * model.dtype_bytes
        self._comm = CommModel(node, tp, pp, self.profile)
        self._build_tables()

    def data_source(self) -> str | None:
        """The profile directory this estimator was fitted on."""
        return str(self.profile.path)

    # -- precomputation ---------------------------------------------------------------
    def _layer_op_counts(self) -> dict[str, int]:
        m = self.model
        counts = {op: 1 for op in model_layer_ops(m)}
        counts["add"] = 2
        return {op: c for op, c in counts.items() if c and op in self.fs.token}

    def _build_tables(self) -> None:
        fs = self.fs
        self._counts = self._layer_op_counts()
        self._n_prof = int(round(fs.max_tokens))
        n_max = max(self._n_prof, 16384)
        ns = np.arange(1, n_max + 1, dtype=float)
        tok = np.zeros(n_max + 1)
        for op, c in self._counts.items():
            tok[1:] += c * fs.token[op].eval_array(ns)
        self._ar_count = 1 if self.model.parallel_attn_mlp else 2
        if self.tp > 1:
            tok[1:] += self._ar_count * self._comm.all_reduce_array(ns * self._act_bytes)
        self._tok = tok.tolist()
        self._n_max = n_max
        self._tok_extra: dict[int, float] = {}
        launch = fs.cpu.get("cpu_launch_layer")
        self._launch = launch(1.0) if launch is not None else 0.0
        self._graph_replay = fs.cpu["cpu_graph_replay"](1.0) if "cpu_graph_replay" in fs.cpu else 0.0
        self._head: dict[int, float] = {}
        self._embed: dict[int, float] = {}
        self._cpu: dict[int, float] = {}
        self._pp: dict[int, float] = {}
        pre = fs.prefill
        self._pre_scale: dict = {}
        self._pre_q_max = pre.rows[-1]
        self._pre_kv_max = max(math.exp(c.x_max) for c in pre.curves)
        dec = fs.decode
        self._dec_curves: dict = {}
        self._dec_b_max = int(dec.rows[-1])
        # KV entries the decode grid covered (per batch row: b x (ctx + 1)); beyond: scaled
        self._dec_kv_max = max(r * math.exp(c.x_max) for r, c in zip(dec.rows, dec.curves))

    def _warn(self, what: str, detail: str) -> None:
        if what in self._warned or not self.config.warn_extrapolation:
            return
        self._warned.add(what)
        warnings.warn(
            f"profile estimator ({self.profile.describe()}): {detail} is beyond the profiled range; "
            f"scaling the nearest measurement in proportion to the work",
            ExtrapolationWarning,
            stacklevel=3,
        )

    # -- pieces -----------------------------------------------------------------------
    def token_time(self, n: int) -> float:
        """Token-level operators of one layer plus its TP all-reduces, for ``n`` tokens."""
        if n <= self._n_max:
            if n > self._n_prof:
                self._warn("tokens", f"a batch of {n} tokens (profiled up to {self._n_prof})")
            return self._tok[n]
        t = self._tok_extra.get(n)
        if t is None:
            self._warn("tokens", f"a batch of {n} tokens (profiled up to {self._n_prof})")
            t = sum(c * self.fs.token[op](n) for op, c in self._counts.items())
            if self.tp > 1:
                t += self._ar_count * self._comm.all_reduce(n * self._act_bytes)
            self._tok_extra[n] = t
        return t

    def prefill_attention(self, num_prefill: int, prefill_tokens: int, prefill_work: float) -> float:
        """Attention of ``num_prefill`` chunks with the given aggregates (seconds): the mean chunk
        (:meth:`FittedShard.prefill_time`) times ``n`` and the measured batching factor."""
        n = num_prefill
        q = prefill_tokens / n
        ctx = prefill_work / prefill_tokens - (q + 1) / 2
        if ctx < 0:
            ctx = 0.0
        scale = self._pre_scale.get((n, prefill_tokens))
        if scale is None:
            scale = self._prefill_scale(n, q, prefill_tokens)
        if ctx + q > self._pre_kv_max and ctx >= 0.5:
            self._warn("prefill_ctx", f"a prefill chunk of {q:.0f} after {ctx:.0f} cached tokens")
        return self.fs.prefill_time(q, ctx, n == 1) * scale

    def _prefill_scale(self, n: int, q: float, prefill_tokens: int) -> float:
        """``n`` × the batching factor of ``n`` chunks of ``q`` tokens (memoised; warns past the longest row)."""
        if q > self._pre_q_max:
            self._warn("prefill", f"a prefill chunk of {q:.0f} tokens")
        scale = 1.0 if n == 1 else n * self.fs.prefill_batch_factor(n, q)
        if len(self._pre_scale) < 100_000:
            self._pre_scale[(n, prefill_tokens)] = scale
        return scale

    def _decode_curve(self, b: int):
        """Decode attention at batch ``b`` over KV per request (``context + 1``) as linear segments (memoised):
        ``(knots, starts, values, slopes)``. :func:`bisect_right` of x in ``knots`` picks the segment ``k``,
        and the time is ``values[k] + slopes[k] * (x - starts[k])``: flat below the first knot, linear
        between knots, proportional past the last. Lists for the scalar path, arrays for the vector one."""
        cur = self._dec_curves.get(b)
        if cur is None:
            table = self.fs.decode
            scale = 1.0
            bb = b
            if b > self._dec_b_max:
                bb, scale = self._dec_b_max, b / self._dec_b_max
            xs = [math.exp(x) for x in sorted(set().union(*[c._xl for c in table.curves]))]
            ys = [table.eval(bb, x - 1.0) * scale for x in xs]
            starts = [xs[0]] + xs
            values = [ys[0]] + ys
            slopes = [0.0] + [(ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k]) for k in range(len(xs) - 1)] + [ys[-1] / xs[-1]]
            arrays = (np.array(xs), np.array(starts), np.array(values), np.array(slopes))
            cur = (xs, starts, values, slopes, arrays)
            self._dec_curves[b] = cur
        return cur

    def _warn_decode(self, b: int, decode_kv: int) -> None:
        if b > self._dec_b_max:
            self._warn("decode", f"a decode batch of {b}")
        elif decode_kv > self._dec_kv_max:
            self._warn("decode_ctx", f"{b} decodes reading {decode_kv} KV entries")

    def decode_attention(self, num_decode: int, decode_kv: int) -> float:
        """Attention of ``num_decode`` decoding requests reading ``decode_kv`` KV entries (seconds)."""
        b = num_decode
        if b > self._dec_b_max or decode_kv > self._dec_kv_max:
            self._warn_decode(b, decode_kv)
        xs, starts, values, slopes, _ = self._dec_curves.get(b) or self._decode_curve(b)
        x = decode_kv / b
        k = bisect_right(xs, x)
        return values[k] + slopes[k] * (x - starts[k])

    def device_layer_time(self, shape: BatchShape) -> float:
        """GPU time of one layer (no host launch stalls)."""
        n = shape.num_tokens
        if n == 0:
            return 0.0
        t = self._tok[n] if self._n_prof >= n else self.token_time(n)
        if shape.num_prefill:
            t += self.prefill_attention(shape.num_prefill, shape.prefill_tokens, shape.prefill_work)
        if shape.num_decode:
            t += self.decode_attention(shape.num_decode, shape.decode_kv)
        return t

    def _launch_bound(self, shape: BatchShape) -> bool:
        if not self._launch:
            return False
        if self._eager:
            return True
        return shape.num_prefill > 0 or shape.num_decode > self._graph_max

    # -- RuntimeEstimator API --------------------------------------------------------------
    def describe(self) -> str:
        shard = self.profile.metadata.get("shards", {}).get(str(self.tp), {})
        kernel = shard.get("attention_backend")
        attn = f", attention measured with {kernel}" if kernel else ""
        return f"profile ({self.profile.describe()} at {self.profile.path}, {self.config.engine_mode}{attn})"

    def layer_time(self, shape: BatchShape) -> float:
        """Device time of one layer, TP all-reduces included; a launch-bound layer takes the launch time."""
        t = self.device_layer_time(shape)
        if self._launch and t < self._launch and shape.num_tokens and self._launch_bound(shape):
            return self._launch
        return t

    def embed_time(self, num_tokens: int) -> float:
        t = self._embed.get(num_tokens)
        if t is None:
            t = 0.0
            if num_tokens > 0:
                e = self.fs.token.get("embed")
                t = e(num_tokens) if e is not None else 0.0
                if self.tp > 1:
                    t += self._comm.all_reduce(num_tokens * self._act_bytes)
            self._embed[num_tokens] = t
        return t

    def head_time(self, num_seqs: int) -> float:
        t = self._head.get(num_seqs)
        if t is None:
            t = 0.0
            if num_seqs > 0:
                for op in ("final_norm", "lm_head", "sample"):
                    c = self.fs.token.get(op)
                    if c is not None:
                        t += c(num_seqs)
                if self.tp > 1:
                    t += self._comm.all_gather(num_seqs * self.model.vocab_size * self.model.dtype_bytes)
            self._head[num_seqs] = t
        return t

    def pp_transfer_time(self, num_tokens: int) -> float:
        t = self._pp.get(num_tokens)
        if t is None:
            t = self._comm.send_recv(num_tokens * self._act_bytes) if num_tokens > 0 else 0.0
            self._pp[num_tokens] = t
        return t

    def cpu_overhead(self, num_seqs: int) -> float:
        """Host time per iteration: measured input preparation and sampling (plus a graph replay)."""
        t = self._cpu.get(num_seqs)
        if t is None:
            t = 0.0
            if num_seqs > 0:
                for op in ("cpu_prepare", "cpu_sample"):
                    c = self.fs.cpu.get(op)
                    if c is not None:
                        t += c(num_seqs)
                if not self._eager:
                    t += self._graph_replay
            self._cpu[num_seqs] = t
        return t

    def forward_time(self, shape: BatchShape) -> float:
        """``num_layers × layer_time + embed_time + head_time`` (+ pipeline transfers), with
        :meth:`layer_time` inlined (called once per simulated iteration; the same operations in order)."""
        n = shape.num_tokens
        if n == 0:
            layer = 0.0
        else:
            layer = self._tok[n] if self._n_prof >= n else self.token_time(n)
            if shape.num_prefill:
                layer += self.prefill_attention(shape.num_prefill, shape.prefill_tokens, shape.prefill_work)
            if shape.num_decode:
                layer += self.decode_attention(shape.num_decode, shape.decode_kv)
            launch = self._launch
            if launch and layer < launch and (self._eager or shape.num_prefill > 0 or shape.num_decode > self._graph_max):
                layer = launch
        m = shape.num_prefill + shape.num_decode
        embed = self._embed.get(n)
        if embed is None:
            embed = self.embed_time(n)
        head = self._head.get(m)
        if head is None:
            head = self.head_time(m)
        t = self.model.num_layers * layer + embed + head
        if self.pp > 1:
            t += (self.pp - 1) * self.pp_transfer_time(n)
        return t

    def decode_iteration_time(self, num_decode: int, decode_kv: int) -> float:
        """One decode-only iteration: ``forward_time + cpu_overhead`` of ``BatchShape(num_decode, decode_kv)``,
        inlined (the event loop's hottest call: no batch object, the same operations in the same order)."""
        n = num_decode
        if n <= 0:
            return self.forward_time(BatchShape(num_decode=n, decode_kv=int(decode_kv))) + self.cpu_overhead(n)
        layer = (self._tok[n] if self._n_prof >= n else self.token_time(n)) + self.decode_attention(n, int(decode_kv))
        launch = self._launch
        if launch and layer < launch and (self._eager or n > self._graph_max):
            layer = launch
        t = self.model.num_layers * layer + self.embed_time(n) + self.head_time(n)
        if self.pp > 1:
            t += (self.pp - 1) * self.pp_transfer_time(n)
        return t + self.cpu_overhead(n)

    def decode_iteration_times(self, num_decode: int, decode_kv: np.ndarray) -> np.ndarray:
        """:meth:`decode_iteration_time` over an array of KV reads, vectorised with the same IEEE operations
        in the same order (only + - * / and comparisons), so both agree bit for bit."""
        kv = np.asarray(decode_kv)
        n = int(num_decode)
        if n <= 0 or kv.size == 0:
            f = self.decode_iteration_time
            return np.array([f(n, k) for k in kv.tolist()], dtype=np.float64)
        kvi = np.asarray(kv, dtype=np.int64)  # the scalar path's int(decode_kv)
        if n > self._dec_b_max or int(kvi.max()) > self._dec_kv_max:
            first = int(kvi[np.argmax(kvi > self._dec_kv_max)]) if n <= self._dec_b_max else int(kvi[0])
            self._warn_decode(n, first)
        xs, starts, values, slopes = (self._dec_curves.get(n) or self._decode_curve(n))[4]
        x = kvi / n
        k = np.searchsorted(xs, x, side="right")
        attn = values[k] + slopes[k] * (x - starts[k])
        layer = (self._tok[n] if self._n_prof >= n else self.token_time(n)) + attn
        launch = self._launch
        if launch and (self._eager or n > self._graph_max):
            layer = np.where(layer < launch, launch, layer)
        t = self.model.num_layers * layer + self.embed_time(n) + self.head_time(n)
        if self.pp > 1:
            t = t + (self.pp - 1) * self.pp_transfer_time(n)
        return t + self.cpu_overhead(n)

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        """Seconds per operator of one layer (``add`` covers both residual adds), ``tp_all_reduce``,
        attention, and ``launch_stall`` (eager launch time beyond the GPU time)."""
        n = shape.num_tokens
        out: dict[str, float] = {}
        for op, c in self._counts.items():
            out[op] = c * self.fs.token[op](n) if n else 0.0
        out["tp_all_reduce"] = self._ar_count * self._comm.all_reduce(n * self._act_bytes) if (n and self.tp > 1) else 0.0
        out["attn_prefill"] = (
            self.prefill_attention(shape.num_prefill, shape.prefill_tokens, shape.prefill_work) if shape.num_prefill else 0.0
        )
        out["attn_decode"] = self.decode_attention(shape.num_decode, shape.decode_kv) if shape.num_decode else 0.0
        out["launch_stall"] = max(0.0, self.layer_time(shape) - self.device_layer_time(shape))
        return out


def _isclose(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)
