"""Timers: CUDA events over CUDA-graph replays on GPU; host wall time.

GPU method (per measurement point): warm up every rotated closure (so lazy
initialisation and cuBLAS heuristics happen outside the timing), capture
``N`` back-to-back calls cycling through the rotated inputs into one CUDA
graph, replay it ``repeats`` times between CUDA events and report per-call
statistics over the replays. The graph removes host launch gaps from kernel
times; rotating weight copies whose total exceeds the L2 cache keeps small
operators from being flattered by a warm cache. If capture fails the same
back-to-back loop runs eagerly between events.

CPU profiles are not timed here: they time the reference executor's own
iterations operator by operator (:mod:`vidur.profile.cpu`).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch

Fn = Callable[[], object]


class Stats:
    """Per-call time statistics in milliseconds."""

    __slots__ = ("median", "mean", "min", "std", "repeats")

    def __init__(self, samples_ms: Sequence[float]):
        xs = sorted(samples_ms)
        self.median = statistics.median(xs)
        self.mean = statistics.fmean(xs)
        self.min = xs[0]
        self.std = statistics.pstdev(xs) if len(xs) > 1 else 0.0
        self.repeats = len(xs)

    def row(self) -> tuple[float, float, float, float, int]:
        return (self.median, self.mean, self.min, self.std, self.repeats)


class CudaGraphTimer:
    """CUDA-event timing of back-to-back calls captured in a CUDA graph."""

    method = (
        "cuda: CUDA events around CUDA-graph replays of back-to-back calls over rotated weight copies "
        "(> L2), per-call median over replays, after warm-up"
    )

    def __init__(self, device: torch.device, repeats: int = 5, target_ms: float = 2.0, max_calls: int = 64):
        self.device = device
        self.repeats = repeats
        self.target_ms = target_ms
        self.max_calls = max_calls
        self.graph_failures = 0
        self.stream = torch.cuda.Stream(device)

    def _events(self):
        return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def measure(self, fns: Sequence[Fn]) -> Stats:
        k = len(fns)
        # inputs were made on the default stream: let the timing stream wait for them
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for f in fns:  # warm-up (also triggers lazy init / autotuning)
                f()
            s, e = self._events()
            s.record()
            for f in fns:
                f()
            e.record()
        torch.cuda.synchronize(self.device)
        est = max(s.elapsed_time(e) / k, 1e-4)
        calls = max(k, min(self.max_calls, int(self.target_ms / est)))
        calls = max(1, calls)
        try:
            return self._graph(fns, calls)
        except Exception:  # noqa: BLE001 - some ops cannot be captured: time them eagerly
            self.graph_failures += 1
            torch.cuda.synchronize(self.device)
            return self._eager(fns, calls)

    def _graph(self, fns: Sequence[Fn], calls: int) -> Stats:
        k = len(fns)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=self.stream):
            for j in range(calls):
                fns[j % k]()
        g.replay()  # first replay uploads the graph
        torch.cuda.synchronize(self.device)
        samples = []
        for _ in range(self.repeats):
            s, e = self._events()
            with torch.cuda.stream(self.stream):
                s.record()
                g.replay()
                e.record()
            e.synchronize()
            samples.append(s.elapsed_time(e) / calls)
        g.reset()  # give the graph's private memory pool back
        return Stats(samples)

    def _eager(self, fns: Sequence[Fn], calls: int) -> Stats:
        k = len(fns)
        samples = []
        for _ in range(self.repeats):
            s, e = self._events()
            with torch.cuda.stream(self.stream):
                s.record()
                for j in range(calls):
                    fns[j % k]()
                e.record()
            e.synchronize()
            samples.append(s.elapsed_time(e) / calls)
        return Stats(samples)


def host_time(fn: Fn, repeats: int = 7, sync: Callable[[], None] | None = None) -> Stats:
    """Host wall time of ``fn`` (ms), synchronising the device before each call when ``sync`` is given."""
    fn()
    samples = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    if sync:
        sync()
    return Stats(samples)
