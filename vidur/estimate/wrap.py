"""Estimators that wrap another estimator (``inner: auto`` or a registered name).

A :class:`WrappingEstimator` subclass declares a ``Config`` with an ``inner``
field; the resolver (:func:`vidur.resolve.estimator.resolve_estimator`)
resolves ``inner`` exactly as if the scenario had named it (``auto``
included, with the run's engine mode, profile and calibration), builds it and
sets it as :attr:`WrappingEstimator.inner` before the wrapper prices anything.
Every method delegates to ``inner`` by default: override the ones you change.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from vidur.estimate.base import BatchShape, RuntimeEstimator


@attrs.frozen(kw_only=True)
class WrapperConfig:
    """``inner``: the estimator to wrap (``auto`` or a registered name)."""

    inner: str = "auto"


class WrappingEstimator(RuntimeEstimator):
    """A runtime estimator over another one (:attr:`inner`).

    Subclass it, give it a ``Config`` with an ``inner: str = "auto"`` field
    (subclass :class:`WrapperConfig`) and override what you change. If you
    change decode-only prices, override :meth:`decode_iteration_time` and
    :meth:`decode_iteration_times` the same way as :meth:`forward_time`: the
    simulation checks on a sample that they agree before it runs, and stops
    with one line naming the plugin when they do not.
    """

    Config: ClassVar[type] = WrapperConfig
    #: the wrapped estimator, built and set by the resolver before any call
    inner: RuntimeEstimator

    def describe(self) -> str:
        return f"{self.name} over {self.inner.describe()}"

    def data_source(self) -> str | None:
        return self.inner.data_source()

    def layer_time(self, shape: BatchShape) -> float:
        return self.inner.layer_time(shape)

    def head_time(self, num_seqs: int) -> float:
        return self.inner.head_time(num_seqs)

    def embed_time(self, num_tokens: int) -> float:
        return self.inner.embed_time(num_tokens)

    def pp_transfer_time(self, num_tokens: int) -> float:
        return self.inner.pp_transfer_time(num_tokens)

    def cpu_overhead(self, num_seqs: int) -> float:
        return self.inner.cpu_overhead(num_seqs)

    def use_cuda_graphs(self, sizes, decode_only: bool = False) -> None:
        self.inner.use_cuda_graphs(sizes, decode_only=decode_only)

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        return self.inner.breakdown(shape)

    def stage_time(self, shape: BatchShape, stage: int, num_layers: int) -> float:
        return self.inner.stage_time(shape, stage, num_layers)

    def forward_time(self, shape: BatchShape) -> float:
        return self.inner.forward_time(shape)

    def decode_iteration_time(self, num_decode: int, decode_kv: int) -> float:
        return self.inner.decode_iteration_time(num_decode, decode_kv)

    def decode_iteration_times(self, num_decode: int, decode_kv: np.ndarray) -> np.ndarray:
        return self.inner.decode_iteration_times(num_decode, decode_kv)


def decode_pricing_mismatch(est: RuntimeEstimator, max_batch: int = 64) -> str | None:
    """Check, on a small sample of decode-only batches, that ``est``'s vectorised
    :meth:`~RuntimeEstimator.decode_iteration_times` (what fast-forward uses)
    equals its scalar :meth:`~RuntimeEstimator.decode_iteration_time` (what
    stepping uses) and :meth:`~RuntimeEstimator.decode_pricer` (fast-forward's scalar
    loop) exactly, and all agree with ``forward_time + cpu_overhead``.
    Returns what disagrees in a few words, or None."""
    for n in sorted({1, 3, max(1, min(int(max_batch), 24))}):
        kv = n * 100.0 + n * np.arange(6, dtype=np.float64)
        vec = np.asarray(est.decode_iteration_times(n, kv), dtype=np.float64)
        if vec.shape != kv.shape:
            return f"decode_iteration_times({n}, <{len(kv)} values>) returned shape {vec.shape}"
        for x, v in zip(kv.tolist(), vec.tolist()):
            s = est.decode_iteration_time(n, int(x))
            if s != v:
                return (f"decode_iteration_times gives {v!r} but decode_iteration_time gives {s!r} "
                        f"for {n} decodes reading {int(x)} KV tokens; they must be equal")
            p = est.decode_pricer(n)(int(x))
            if p != s:
                return (f"decode_pricer({n}) gives {p!r} but decode_iteration_time gives {s!r} "
                        f"for {int(x)} KV tokens; they must be equal")
            full = est.forward_time(BatchShape(num_decode=n, decode_kv=int(x))) + est.cpu_overhead(n)
            if not abs(full - s) <= 1e-6 * abs(full):
                return (f"decode_iteration_time gives {s!r} but forward_time + cpu_overhead gives {full!r} "
                        f"for {n} decodes reading {int(x)} KV tokens; override both the same way")
    return None
