"""CPU profiling: time the reference executor's own iterations, operator by operator.

On a CPU the host runs every operator to completion before the next, so
the faithful measurement of what an iteration costs is the iteration itself:
the same code (:func:`vidur.reference.layers.layer_forward` and friends inside
:class:`vidur.reference.executor.ReferenceExecutor`), the same cache
conditions (all of the model's layers, each with its own weights, touched
once per forward pass; the KV pool; the activations), the same attention
calls (one SDPA call per request), the same input preparation and the same
thread count. :meth:`~vidur.reference.executor.ReferenceExecutor.time_iteration`
runs a synthetic iteration with an :class:`~vidur.reference.layers.OpClock`
ticking after every operator; every row of a CPU profile comes from such
runs ("probes"):

- ``decode`` probes at context 0 (``s`` one-token sequences) give the
  token-level operators and the embedding up to :data:`DECODE_TOKENS`
  tokens, the edge operators (final norm, LM head, argmax) and the host
  overheads (``cpu_prepare``: input preparation; ``cpu_sample``: tokens to
  the host) at ``s`` sequences;
- ``chunks`` probes (``n`` new tokens in chunks of at most :data:`CHUNK`
  after no context) give the token-level operators beyond;
- ``decode`` probes (``b`` requests after ``ctx`` cached tokens) and
  ``prefill`` probes (``b`` chunks of ``q`` tokens after ``ctx``) give
  attention: the attention calls as timed, plus what they add to the
  layer's other operators by pushing weights out of the caches with the KV
  they read (:meth:`CpuProber.excess`: the other operators minus those of a
  reference probe without context, fitted over the query-key pairs).

Noise: on a shared host, other tenants' cache and memory traffic slows the
memory-bound work of small iterations by up to 2x for seconds to minutes
(compute-bound GEMMs far less). The profile aims at the machine undisturbed:
every probe runs in :data:`ROUNDS` rounds over the whole shard, each round in
a new random order (a warm-up and ``repeats / ROUNDS`` timed runs; a probe
whose run takes over :data:`LONG_RUN_S`: no warm-up, one run, in
:data:`LONG_ROUNDS` rounds), and a row is the median of the faster half of
its runs (by the whole iteration's time); token-level curves are smoothed
locally when fitted (:func:`vidur.fit.curves.local_linear`). A small pace
probe runs every :data:`PACE_EVERY_S`; its spread is in the shard's
metadata (``executor.machine_speed``): how disturbed the machine was.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
import time
from collections.abc import Callable

from vidur.profile.grids import Grid
from vidur.reference.layers import LAYER_STEPS
from vidur.profile.timing import Stats

#: longest chunk of the probes that measure token-level operators
CHUNK = 256
#: rounds over all probes (each round a warm-up and ``repeats / ROUNDS`` timed runs of every probe)
ROUNDS = 6
#: a probe whose run takes longer than this (seconds) runs without warm-up in at most :data:`LONG_ROUNDS` rounds
LONG_RUN_S = 0.1
LONG_ROUNDS = 3
#: weights (bytes) of the layers a CPU profile builds: all of the model's layers up to this size
LAYER_BYTES_BUDGET = 1 << 30
#: profile operators measured as the layer's ``attn`` step
ATTENTION = {"attn_prefill", "attn_decode"}
#: per-sequence operators: measured on ``decode`` probes at context 0
PER_SEQUENCE = {"final_norm", "lm_head", "sample", "cpu_prepare", "cpu_sample"}
LAYER = "_layer"  # a probe's per-run sum over one layer's operators (attention included)
ROUND = "_round"  # the round of each timed run
#: the pace probe (a small decode iteration) runs every PACE_EVERY_S: its spread, in the shard's metadata,
#: says how much the machine's speed varied while it was profiled
PACE = ("decode", 8, 128)
PACE_EVERY_S = 0.5
#: the operators outside the layers (their per-run times add to the layer's times once per iteration)
OUTSIDE_LAYERS = ("cpu_prepare", "embed", "final_norm", "lm_head", "sample", "cpu_sample")
#: token-level operators up to this many tokens come from ``decode`` probes at context 0, beyond from ``chunks``
DECODE_TOKENS = 64

METHOD = (
    "cpu: the reference executor's own iterations (ReferenceExecutor.time_iteration: the operators, all layers, "
    "KV layout, per-request SDPA, input preparation and thread count of vidur validate), a perf_counter clock "
    "ticking after every operator (its own cost taken off); token-level operators from decodes without context "
    "(<= 64 tokens) or chunked prefills; attention calls plus their cache excess on the other operators (fitted "
    "over the query-key pairs); {repeats} runs in shuffled rounds (each after a warm-up), a row the median of the "
    "faster half: the machine undisturbed by other tenants (see vidur/profile/cpu.py)"
)


def profile_layers(model, tp: int, dtype_bytes: int) -> int:
    """How many decoder layers a CPU profile builds: all of them when their weights fit
    :data:`LAYER_BYTES_BUDGET` (the real cache conditions), else as many as fit (at least 2)."""
    from vidur.reference.shapes import ShardShape

    per_layer = ShardShape(model, tp).layer_params() * dtype_bytes
    if model.num_layers * per_layer <= LAYER_BYTES_BUDGET:
        return model.num_layers
    return max(2, min(model.num_layers, LAYER_BYTES_BUDGET // max(per_layer, 1)))


class CpuProber:
    """Runs the probes of one shard on a :class:`ReferenceExecutor` and keeps their timed runs."""

    def __init__(self, model, tp: int, grid: Grid, dtype, repeats: int = 7):
        from vidur.reference.layers import tick_overhead
        from vidur.reference.executor import ReferenceExecutor

        self.model = model
        self.tp = tp
        self.grid = grid
        self.repeats = max(1, int(repeats))
        self.rounds = min(ROUNDS, self.repeats)
        self.per_round = -(-self.repeats // self.rounds)
        max_pos = model.max_position_embeddings
        self.pool = self._pool_tokens(grid, max_pos)
        self.layers = profile_layers(model, tp, dtype.itemsize)
        self.executor = ReferenceExecutor(
            model,
            "cpu",
            max_kv_tokens=self.pool,
            reserved_tokens=self.pool,
            max_batch_tokens=max(grid.max_tokens, 512),
            max_seq_tokens=max_pos,
            max_requests=max(grid.max_tokens, 1024),
            attention="sdpa",
            tp=tp,
            layers=self.layers,
            dtype=dtype,
            llama_only=False,
        )
        self.clock_overhead = tick_overhead()
        self.samples: dict[tuple, dict[str, list[float]]] = {}  # probe -> op -> ms per timed run
        self._excess_fits: tuple | None = None

    @staticmethod
    def _pool_tokens(grid: Grid, max_pos: int) -> int:
        need = [grid.max_kv_tokens, grid.max_tokens]
        need += [b * (q + c) for b, q, c in grid.prefill_points(max_pos)]
        need += [b * (c + 1) for b, c in grid.decode_points(max_pos)]
        return int(max(need))

    @property
    def attention_backend(self) -> str:
        return "sdpa per request (reference executor)"

    # -- which probes give a row ------------------------------------------------------------
    @staticmethod
    def _chunks(n: int) -> tuple:
        return ("chunks", int(n))

    def probe_keys(self, op: str, n: int, b: int, c: int) -> list[tuple]:
        """The probes whose runs give the row ``(op, n, b, c)``; for attention, its probe and then the
        reference probe its other operators are taken from."""
        if op == "attn_decode":
            return [("decode", b, c), ("decode", b, 0)] if c else [("decode", b, 0)]
        if op == "attn_prefill":
            if c == 0 and ((b == 1 and n <= CHUNK) or n == CHUNK):
                return [self._chunks(n * b)]  # the very iteration of the reference probe
            return [("prefill", n, b, c), self._chunks(n * b)]
        if op in PER_SEQUENCE:
            return [("decode", b if op.startswith("cpu_") else n, 0)]
        return [("decode", n, 0)] if n <= DECODE_TOKENS else [self._chunks(n)]

    def row(self, op: str, n: int, b: int, c: int) -> tuple | None:
        """``(median, mean, min, std, repeats)`` in ms of operator ``op`` at the point, or None when its
        probes have not been measured (see :meth:`measure`).

        Attention: each timed run's attention call plus the attention's
        excess (:meth:`excess`) at the probe's query-key pairs.
        """
        keys = self.probe_keys(op, n, b, c)
        if any(k not in self.samples for k in keys):
            return None
        probe = self.samples[keys[0]]
        if op not in ATTENTION:
            return Stats(probe[op]).row()
        extra = self.excess(keys[0]) if len(keys) > 1 else 0.0
        return Stats([a + extra for a in probe["attn"]]).row()

    @staticmethod
    def pairs(key: tuple) -> int:
        """Query-key pairs of a probe's attention (per layer and head): the KV entries a decode reads,
        the scores (and mask) a prefill chunk computes."""
        if key[0] == "decode":
            return key[1] * (key[2] + 1)
        if key[0] == "prefill":
            _, q, b, c = key
            return b * q * (q + c)
        return 0

    def excess(self, key: tuple) -> float:
        """What attention adds to the layer's other operators (ms): the weights that its KV reads (and
        a prefill's scores) push out of the caches.

        Each probe's excess is the median over its runs of its other operators minus its reference
        probe's in the same round; one non-decreasing curve over the query-key pairs, fitted to the
        probes of a kind (decode, prefill) together, gives the value used, so that no single noisy
        difference (the other operators of a small batch vary more than its attention takes)
        decides a row."""
        kind = key[0]
        fits = self._excess_fits
        if fits is None or fits[0] != len(self.samples):
            fits = self._excess_fits = (len(self.samples), self._fit_excess())
        xs, ys = fits[1].get(kind, ([], []))
        if not xs:
            return 0.0
        x = math.log(self.pairs(key))
        i = bisect.bisect_right(xs, x)
        if i == 0:
            return ys[0]
        if i == len(xs):
            return ys[-1]
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1])

    def _fit_excess(self) -> dict[str, tuple[list[float], list[float]]]:
        import numpy as np

        from vidur.fit.curves import pava

        points: dict[str, list[tuple[float, float, int]]] = {}
        for key, probe in self.samples.items():
            ref_key = self._reference(key)
            if ref_key is None or ref_key not in self.samples:
                continue
            ref = self.samples[ref_key]
            by_round: dict[float, list[float]] = {}
            for lay, a, r in zip(ref[LAYER], ref["attn"], ref[ROUND]):
                by_round.setdefault(r, []).append(lay - a)
            everywhere = statistics.median(x for v in by_round.values() for x in v)
            base = {r: statistics.median(v) for r, v in by_round.items()}
            diffs = [lay - a - base.get(r, everywhere) for lay, a, r in zip(probe[LAYER], probe["attn"], probe[ROUND])]
            points.setdefault(key[0], []).append((math.log(self.pairs(key)), statistics.median(diffs), len(diffs)))
        out = {}
        for kind, pts in points.items():
            pts.sort()
            xs = np.array([p[0] for p in pts])
            ys = np.maximum(pava(np.array([p[1] for p in pts]), np.array([p[2] for p in pts], dtype=float)), 0.0)
            out[kind] = (xs.tolist(), ys.tolist())
        return out

    # -- measurement --------------------------------------------------------------------------
    def measure(self, keys, deadline: float | None = None, progress: Callable[[int], None] | None = None) -> None:
        """Run the probes ``keys`` (those not yet measured) in :attr:`rounds` rounds.

        Each round visits the probes in a new random order, a reference probe
        immediately followed by the probes whose attention is measured against
        it, so that a difference is taken between runs seconds apart. A probe
        is kept only when all its rounds ran (a ``deadline`` leaves the rest
        to a resumed run). ``progress(k)`` is told of every probe round.
        """
        keys = [k for k in dict.fromkeys(keys) if k not in self.samples]
        refs = {k: self._reference(k) for k in keys}
        groups: dict[tuple, list[tuple]] = {}
        for k in keys:
            head = refs[k] if refs[k] in refs else k
            groups.setdefault(head, [])
            if head != k:
                groups[head].append(k)
        acc: dict[tuple, dict[str, list[float]]] = {k: {} for k in keys}
        done = {k: 0 for k in keys}
        long = {k: False for k in keys}
        heads = list(groups)
        rng = random.Random(self.tp)
        pace: list[tuple[float, float]] = []  # (time, ms of the pace probe)
        for r in range(self.rounds):
            rng.shuffle(heads)
            for head in heads:
                members = groups[head]
                rng.shuffle(members)
                for key in [head] + members:
                    if deadline is not None and time.time() > deadline:
                        break
                    if not pace or time.perf_counter() - pace[-1][0] > PACE_EVERY_S:
                        runs = self._runs(PACE, warmup=1, repeats=2)
                        pace.append((time.perf_counter(), statistics.median(sum(x.values()) for x in runs) * 1e3))
                    if not (long[key] and done[key] >= min(LONG_ROUNDS, self.rounds)):
                        t0 = time.perf_counter()
                        runs = self._runs(key, warmup=0 if long[key] else 1, repeats=1 if long[key] else self.per_round)
                        t1 = time.perf_counter()
                        long[key] = long[key] or (t1 - t0) / (len(runs) + 1) > LONG_RUN_S
                        a = acc[key]
                        for run in runs:
                            for op, v in run.items():
                                a.setdefault(op, []).append(v * 1e3)
                            a.setdefault(LAYER, []).append(sum(run.get(op, 0.0) for op in LAYER_STEPS) * 1e3)
                            a.setdefault(ROUND, []).append(float(r))
                        done[key] += 1
                    if progress is not None:
                        progress(1)
        self.pace_spread = _spread(pace)
        for key in keys:
            if done[key] >= (min(LONG_ROUNDS, self.rounds) if long[key] else self.rounds):
                a = acc[key]
                # the faster half of the runs: the machine undisturbed by other tenants
                total = [lay * self.layers + sum(v[i] for op, v in a.items() if op in OUTSIDE_LAYERS)
                         for i, lay in enumerate(a[LAYER])]
                keep = sorted(sorted(range(len(total)), key=lambda i: (total[i], i))[: -(-len(total) // 2)])
                self.samples[key] = {op: [v[i] for i in keep] for op, v in a.items()}

    @staticmethod
    def _reference(key: tuple) -> tuple | None:
        if key[0] == "decode" and key[2]:
            return ("decode", key[1], 0)
        if key[0] == "prefill":
            return ("chunks", key[1] * key[2])
        return None

    def _runs(self, key: tuple, warmup: int, repeats: int) -> list[dict[str, float]]:
        """Probe ``key``: ``warmup`` untimed runs, then ``repeats`` timed runs."""
        kind = key[0]
        if kind == "decode":
            _, b, c = key
            decodes, prefills = [c] * b, []
        elif kind == "prefill":
            _, q, b, c = key
            decodes, prefills = [], [(q, c)] * b
        else:
            n = key[1]
            decodes = []
            prefills = [(CHUNK, 0)] * (n // CHUNK) + ([(n % CHUNK, 0)] if n % CHUNK else [])
        return self.executor.time_iteration(
            decodes, prefills, repeats=repeats, warmup=warmup, clock_overhead=self.clock_overhead
        )

    def describe(self) -> dict:
        return {
            "layers": self.layers,
            "kv_pool_tokens": self.pool,
            "chunk": CHUNK,
            "clock_overhead_ns": round(self.clock_overhead * 1e9, 1),
            "rounds": self.rounds,
            "runs_per_round": self.per_round,
            "machine_speed": getattr(self, "pace_spread", {}),
            "attention_excess_ms": {
                kind: [[round(math.exp(x)), round(y, 4)] for x, y in zip(xs, ys)][:: max(1, len(xs) // 12)]
                for kind, (xs, ys) in (self._fit_excess() if self.samples else {}).items()
            },
        }


def _spread(pace: list[tuple[float, float]]) -> dict:
    """The pace probe's runs: how many, their median (ms) and their 10th/90th percentiles relative to it."""
    out: dict = {"pace_probe": list(PACE), "pace_runs": len(pace)}
    if len(pace) >= 3:
        vs = sorted(v for _, v in pace)
        med = statistics.median(vs)
        out.update(
            pace_ms_median=round(med, 4),
            p10=round(vs[int(0.1 * len(vs))] / med, 3),
            p90=round(vs[min(len(vs) - 1, int(0.9 * len(vs)))] / med, 3),
        )
    return out
