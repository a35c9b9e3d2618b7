"""Conformance suites: the properties every scheduler plugin must keep.

A plugin runs them against itself with one subclass each::

    from vidur.testing.conformance import GlobalSchedulerConformance, ReplicaSchedulerConformance

    class TestMyScheduler(ReplicaSchedulerConformance):
        scheduler = MyScheduler
        config = {"chunk_size": 16}        # Config fields for the test runs
        token_budget = "chunk_size"        # optional: a Config field bounding batch tokens

    class TestMyRouter(GlobalSchedulerConformance):
        scheduler = MyRouter

Replica-scheduler properties (Hypothesis draws the traces; small KV caches
and batch caps make preemption and queueing common):

- the class declares a ``name`` and an attrs ``Config`` whose defaults build;
- every request completes exactly once, with all its tokens, and nothing is
  left queued, running or holding KV afterwards; processed tokens are
  conserved (kept in KV or discarded by a preemption);
- KV is never over capacity, the block manager's count equals the blocks
  requests hold, and every scheduled token has a KV slot;
- batch limits: at most ``max_batch_size`` requests, each at most once and
  only admitted (running) ones, never more tokens than a request has left,
  and at most ``token_budget`` tokens when the policy declares one;
- no starvation under bounded load: every request finishes within
  ``starvation_slack`` times the one-at-a-time service time of the work in
  the replica when it arrived (plus ``extra_wait_s``), also for a large
  request arriving into a steady stream of small ones;
- deterministic: the same trace twice gives identical batches and timings;
- fast-forward equals stepping (checks :meth:`ReplicaScheduler.is_steady` and
  :meth:`ReplicaScheduler.steady_prefill`);
- with ``lazy_decode``, the lazy decode group equals per-request updates.

Global-scheduler properties: the class declares ``name``/``Config``; every
route is a valid replica index (a Python int in range); every request
completes exactly once on the replica it was routed to; same seed, same
routes and timings; fast-forward equals stepping, which checks the
``needs_live_state`` declaration; and routes over replicas that decode in a
lazy group equal routes over eager replicas, which catches a router that
reads ``kv_len``/``blocks``/``last_token`` without ``replica.sync_decoding()``;
a router that sets ``decides_upfront`` routes a trace the same with no
simulation at all (idle replicas), which checks that declaration.

Class attributes tune each suite; see the attribute comments below.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import attrs
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidur.entities.request import Request
from vidur.testing.harness import ClusterHarness, ReplicaHarness
from vidur.workload.content import TreeBuilder
from vidur.testing.strategies import Trace, traces

__all__ = ["GlobalSchedulerConformance", "ReplicaSchedulerConformance", "isolated_time"]


def isolated_time(estimator, prompt: int, output: int) -> float:
    """Seconds to serve one request alone: one whole-prompt prefill, then
    ``output - 1`` single-request decode iterations."""
    from vidur.estimate.base import BatchShape

    t = estimator.forward_time(BatchShape.from_lists(prefills=[(prompt, 0)])) + estimator.cpu_overhead(1)
    if output > 1:
        ctx = np.arange(prompt, prompt + output - 1, dtype=np.float64)
        t += float(np.sum(estimator.decode_iteration_times(1, ctx + 1.0)))
    return float(t)


def _run_property(suite, strategy, check) -> None:
    """Run ``check(drawn)`` under Hypothesis with the suite's example budget."""

    @settings(
        max_examples=suite.max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=suite.derandomize,
        database=None if suite.derandomize else settings().database,
    )
    @given(strategy)
    def prop(drawn):
        check(drawn)

    # one example database entry per suite and property (the wrapper's source is shared)
    prop.hypothesis.inner_test._hypothesis_internal_add_digest = (
        f"{type(suite).__module__}.{type(suite).__qualname__}.{check.__qualname__}".encode()
    )
    prop()


class _Checks:
    """Per-batch checks, run right after every ``schedule()``; the first
    failure of each property is kept so each test reports its own."""

    def __init__(self, suite, harness: ReplicaHarness):
        self.suite = suite
        self.h = harness
        self.failures: dict[str, str] = {}
        self.finished: dict[int, int] = {}
        book = harness.scheduler._book  # the engine releases finished requests here
        inner = book.finish

        def finish(req):
            self.finished[req.id] = self.finished.get(req.id, 0) + 1
            inner(req)

        book.finish = finish
        self.budget = None
        if suite.token_budget is not None:
            self.budget = getattr(harness.config, suite.token_budget)

    def fail(self, prop: str, message: str) -> None:
        self.failures.setdefault(prop, message)

    def __call__(self, sched, batch) -> None:
        reqs = batch.requests
        tokens = batch.tokens
        where = f"at t={sched.now:.6f}, batch {batch!r}"
        if not reqs:
            raise AssertionError(
                f"{type(sched).__name__}.schedule() returned an empty Batch {where}; return None when there is nothing to run"
            )
        # -- batch limits and API use ------------------------------------
        if len(set(map(id, reqs))) != len(reqs):
            self.fail("batch", f"a request appears twice in one batch {where}")
        running = set(map(id, sched.running))
        stray = [r.id for r in reqs if id(r) not in running]
        if stray:
            self.fail("batch", f"requests {stray} were scheduled without being admitted (not in running) {where}")
        cap = sched.config.max_batch_size
        if len(reqs) > cap:
            self.fail("batch", f"{len(reqs)} requests in a batch, max_batch_size is {cap}, {where}")
        for r, n in zip(reqs, tokens):
            if r.group_base is not None:
                continue
            left = r.prefill_target - r.kv_len if r.kv_len < r.prefill_target else 1
            if not 1 <= n <= left:
                self.fail("batch", f"request {r.id} got {n} tokens but has {left} left to process {where}")
        if self.budget is not None:
            total = sum(tokens)
            if total > self.budget and (self.suite.strict_token_budget or len(reqs) > 1):
                self.fail("batch", f"{total} tokens in a batch, token budget {self.suite.token_budget}={self.budget}, {where}")
        # -- KV ------------------------------------------------------------
        kv = sched.kv
        if kv.used > kv.num_blocks:
            self.fail("kv", f"{kv.used} KV blocks in use, capacity {kv.num_blocks}, {where}")
        # requests in a lazy decode group have stale fields: check the others
        # (the KV tests run the policy with lazy_decode off, so nothing is skipped there)
        lazy = any(r.group_base is not None for r in sched.running)
        if not lazy:
            held = sum(r.blocks for r in sched.running) + sum(r.blocks for r in sched.waiting)
            if kv.prefix_caching:
                held -= kv.shared_excess()  # a block shared by k requests is held k times, used once
                problem = kv.audit(list(sched.running) + list(sched.waiting))
                if problem:
                    self.fail("kv", f"prefix cache: {problem}, {where}")
            if held != kv.used:
                self.fail("kv", f"requests hold {held} KV blocks but the block manager counts {kv.used}, {where}")
        for r, n in zip(reqs, tokens):
            if r.group_base is not None:
                continue
            if r.blocks * kv.block_size < r.kv_len + n:
                self.fail(
                    "kv",
                    f"request {r.id} is scheduled {n} tokens on top of {r.kv_len} cached but holds only "
                    f"{r.blocks} blocks of {kv.block_size}, {where}",
                )


class ReplicaSchedulerConformance:
    """Property tests for a replica scheduler; subclass and set ``scheduler``."""

    #: the ReplicaScheduler subclass under test
    scheduler: ClassVar[type | None] = None
    #: Config fields for the test runs (a dict), or a Config instance
    config: ClassVar[Any] = None
    #: the batch cap used when ``config`` is a dict (small, so queues form)
    max_batch_size: ClassVar[int] = 4
    #: KV cache of the test replica: blocks x tokens per block
    num_blocks: ClassVar[int] = 24
    block_size: ClassVar[int] = 4
    #: name of a Config field that bounds the tokens of every batch, if any
    token_budget: ClassVar[str | None] = None
    #: False: a single request may exceed the budget (a long prompt run alone)
    strict_token_budget: ClassVar[bool] = False
    #: seconds a policy may deliberately hold a request back (e.g. an aging threshold)
    extra_wait_s: ClassVar[float] = 0.0
    #: no-starvation bound, as a multiple of the one-at-a-time service time
    starvation_slack: ClassVar[float] = 4.0
    #: Hypothesis examples per property (raise locally, keep CI quick);
    #: derandomize=True makes every run draw the same examples
    max_examples: ClassVar[int] = 20
    derandomize: ClassVar[bool] = False
    #: largest trace drawn
    max_requests: ClassVar[int] = 20
    #: force automatic prefix caching on (True) or off (False); None: the
    #: policy's default. With caching on, requests share content: a common
    #: first part, and equal prompts when their lengths are equal
    prefix_caching: ClassVar[bool | None] = None

    # -- building runs ---------------------------------------------------
    def make_config(self):
        """The Config instance the runs use."""
        cls = self._cls()
        if self.config is None or isinstance(self.config, dict):
            extra = {} if self.prefix_caching is None else {"prefix_caching": self.prefix_caching}
            return cls.Config(**{"max_batch_size": self.max_batch_size, **extra, **(self.config or {})})
        return self.config

    def _cls(self):
        if self.scheduler is None:
            raise TypeError(f"{type(self).__name__} must set 'scheduler' to the ReplicaScheduler class under test")
        return self.scheduler

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def trace_strategy(self):
        """Traces whose every request fits the test replica's KV on its own."""
        cap = self.capacity_tokens
        return traces(
            max_size=self.max_requests,
            max_prompt=max(1, int(cap * 0.4)),
            max_output=max(1, int(cap * 0.3)),
        )

    def run_trace(self, trace: Trace, *, fast_forward: bool = False, eager: bool = False):
        """Run ``trace`` on a fresh harness with the per-batch checks; returns
        ``(harness, checks)``. ``eager=True`` turns ``lazy_decode`` off, so
        every request's fields are current at each batch. The run is cut off
        at a generous time bound so a policy that stalls fails instead of
        hanging."""
        cls = self._cls()
        if eager and cls.lazy_decode:
            cls = type(cls.__name__, (cls,), {"lazy_decode": False, "__module__": cls.__module__})
        tree = TreeBuilder()
        h = ReplicaHarness(
            cls,
            self.make_config(),
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            fast_forward=fast_forward,
            tree=(tree.parent, tree.start),
        )
        checks = _Checks(self, h)
        h.on_batch = checks
        h.add_trace(trace)
        if h.kv.prefix_caching:
            shared_content(tree, h.requests)
        serial = sum(isolated_time(h.estimator, p, o) for _, p, o in trace)
        h.run(max_time=trace.last_arrival + self.extra_wait_s + 4 * self.starvation_slack * serial + 1.0)
        return h, checks

    # -- assertions ------------------------------------------------------
    def assert_completed(self, h: ReplicaHarness, checks: _Checks) -> None:
        """Every request finished exactly once and the replica is empty."""
        if h.unfinished:
            r = h.unfinished[0]
            raise AssertionError(
                f"{len(h.unfinished)} of {len(h.requests)} requests never finished (e.g. request {r.id}: "
                f"{r.generated}/{r.output} tokens, {'queued' if r in h.scheduler.waiting else 'running'}); "
                f"schedule() returned None while work was left"
            )
        twice = {i: n for i, n in checks.finished.items() if n != 1}
        assert not twice, f"finish() called more than once for requests {twice}"
        missing = [r.id for r in h.requests if r.id not in checks.finished]
        assert not missing, f"requests {missing} produced every token but were never finished"
        assert h.loop.completed == len(h.requests)
        for r in h.requests:
            assert math.isfinite(r.completion), f"request {r.id} has no completion time"
            assert r.arrival <= r.first_scheduled <= r.first_token <= r.completion, f"request {r.id} timeline out of order"
        assert not h.scheduler.waiting and not h.scheduler.running, "requests left in waiting/running after the run"
        assert h.kv.used == 0, f"{h.kv.used} KV blocks still allocated after every request finished"
        cols, _ = h.loop.batches.to_columns()
        processed = int(cols["prefill_tokens"].sum() + cols["num_decode"].sum())
        kept = sum(r.prompt + r.output - 1 for r in h.requests)
        recomputed = sum(r.recomputed for r in h.requests)
        if h.kv.prefix_caching:  # tokens found in the prefix cache are not processed
            kept -= h.kv.hit_tokens + h.kv.recompute_hit_tokens
            assert all(r.cached <= r.prompt - 1 for r in h.requests), "more tokens cached than the prompt less one"
        assert processed == kept + recomputed, (
            f"{processed} tokens processed, but requests keep {kept} and preemptions discarded {recomputed}"
        )

    def assert_bounded_wait(self, h: ReplicaHarness) -> None:
        """Each request finishes within slack x the serial time of the work
        in the replica when it arrived (itself included), plus extra_wait_s."""
        est = h.estimator
        reqs = sorted(h.requests, key=lambda r: (r.arrival, r.id))
        iso = {r.id: isolated_time(est, r.prompt, r.output) for r in reqs}
        for r in reqs:
            ahead = sum(iso[q.id] for q in reqs if q.arrival <= r.arrival and q.completion > r.arrival)
            bound = self.extra_wait_s + self.starvation_slack * ahead
            waited = r.completion - r.arrival
            assert waited <= bound + 1e-12, (
                f"request {r.id} (prompt {r.prompt}, output {r.output}) took {waited:.4f} s from arrival to completion; "
                f"the bound is {bound:.4f} s ({self.starvation_slack} x {ahead:.4f} s of work in the replica "
                f"when it arrived + extra_wait_s {self.extra_wait_s}): later requests overtook it"
            )

    # -- properties ------------------------------------------------------
    def test_declares_name_and_config(self):
        from vidur.scheduler.base import ReplicaScheduler, SchedulerConfig

        cls = self._cls()
        assert isinstance(cls, type) and issubclass(cls, ReplicaScheduler), f"{cls!r} must subclass ReplicaScheduler"
        assert _valid_name(cls.name), f"{cls.__name__}.name must be a short name like 'my_policy', got {cls.name!r}"
        assert attrs.has(cls.Config), f"{cls.__name__}.Config must be an attrs class"
        assert issubclass(cls.Config, SchedulerConfig), f"{cls.__name__}.Config must subclass SchedulerConfig"
        cfg = cls.Config()
        try:
            cfg.max_batch_size = cfg.max_batch_size
        except (attrs.exceptions.FrozenInstanceError, AttributeError):
            pass
        else:
            raise AssertionError(f"{cls.__name__}.Config must be frozen (@attrs.frozen): policies must not mutate config")
        self.make_config()

    def test_every_request_completes_exactly_once(self):
        def check(trace):
            h, checks = self.run_trace(trace)
            self.assert_completed(h, checks)

        _run_property(self, self.trace_strategy(), check)

    def test_kv_never_over_capacity(self):
        def check(trace):
            h, checks = self.run_trace(trace, eager=True)
            assert "kv" not in checks.failures, checks.failures["kv"]
            cols, _ = h.loop.batches.to_columns()
            assert (cols["kv_blocks_used"] <= h.kv.num_blocks).all(), "a batch ran with KV over capacity"

        _run_property(self, self.trace_strategy(), check)

    def test_batch_limits_respected(self):
        def check(trace):
            _, checks = self.run_trace(trace, eager=True)
            assert "batch" not in checks.failures, checks.failures["batch"]

        _run_property(self, self.trace_strategy(), check)

    def test_no_starvation_on_random_traces(self):
        def check(trace):
            h, checks = self.run_trace(trace)
            self.assert_completed(h, checks)
            self.assert_bounded_wait(h)

        _run_property(self, self.trace_strategy(), check)

    def starvation_strategy(self):
        """A large request arriving into a steady, below-capacity stream of
        small requests that never leaves the replica empty. The large one fits
        in KV only once no small one is running, so it finishes only if the
        policy at some point stops admitting newcomers ahead of it."""
        cap = self.capacity_tokens
        from vidur.testing.fakes import LinearEstimator

        est_iter = float(LinearEstimator().decode_iteration_times(1, np.array([2.0]))[0])
        short_min = max(1, int(cap * 0.15))

        @st.composite
        def scenario(draw):
            short_out = draw(st.integers(min_value=8, max_value=16))
            # small requests overlap (> 1 in the replica) but stay below the batch cap
            concurrency = draw(st.floats(min_value=1.2, max_value=max(1.2, min(2.5, self.max_batch_size - 0.5))))
            gap = est_iter * short_out / concurrency
            n_stream = draw(st.integers(min_value=80, max_value=120))
            lead = draw(st.integers(min_value=2, max_value=4))
            victim_output = draw(st.integers(min_value=2, max_value=max(2, min(6, short_min))))
            lo = cap - short_min + 1  # victim + any small prompt > capacity
            victim_prompt = draw(st.integers(min_value=lo, max_value=max(lo, cap - victim_output + 1)))
            rows, t = [], 0.0
            for i in range(lead + n_stream):
                if i == lead:
                    rows.append((t, victim_prompt, victim_output))
                rows.append((t, draw(st.integers(short_min, max(short_min, int(cap * 0.2)))), short_out))
                t += gap
            return Trace.from_rows(rows)

        return scenario()

    def test_no_starvation_under_bounded_load(self):
        def check(trace):
            h, checks = self.run_trace(trace)
            self.assert_completed(h, checks)
            self.assert_bounded_wait(h)

        _run_property(self, self.starvation_strategy(), check)

    def test_deterministic(self):
        def check(trace):
            a, _ = self.run_trace(trace)
            b, _ = self.run_trace(trace)
            assert a.batches == b.batches, "the same trace formed different batches in two runs"
            for ra, rb in zip(a.requests, b.requests):
                assert _timeline(ra) == _timeline(rb), f"request {ra.id} differs between two identical runs"

        _run_property(self, self.trace_strategy(), check)

    def test_fast_forward_equals_stepping(self):
        def check(trace):
            a, _ = self.run_trace(trace, fast_forward=False)
            b, _ = self.run_trace(trace, fast_forward=True)
            _assert_same_run(a, b, "is_steady() or steady_prefill() let the engine fast-forward a batch that stepping would not repeat")

        _run_property(self, self.trace_strategy(), check)

    def test_lazy_decode_equals_eager(self):
        if not self._cls().lazy_decode:
            import pytest

            pytest.skip("the policy does not set lazy_decode")

        def check(args):
            trace, fast = args
            a, _ = self.run_trace(trace, fast_forward=fast)
            b, _ = self.run_trace(trace, fast_forward=fast, eager=True)
            _assert_same_run(a, b, "with lazy_decode the policy must not read kv_len/blocks/last_token of "
                             "decoding requests without calling sync_decoding() first")

        _run_property(self, st.tuples(self.trace_strategy(), st.booleans()), check)


def shared_content(tree, reqs, common: int = 16) -> None:
    """Give ``reqs`` content that shares prefixes: the first ``common`` tokens
    are the same for all, and prompts of equal length are identical."""
    root = tree.node(-1, 0)
    for r in reqs:
        leaf = root if r.prompt <= common else tree.intern(root, r.prompt, common)
        r.content = (leaf, -1, r.id, -1)


def _valid_name(name) -> bool:
    return isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name) is not None


def _timeline(r: Request) -> tuple:
    return (r.replica, r.first_scheduled, r.first_token, r.completion, r.preemptions, r.recomputed)


def _assert_same_run(a, b, hint: str) -> None:
    for ra, rb in zip(a.requests, b.requests):
        assert _timeline(ra) == _timeline(rb), f"request {ra.id}: stepping {_timeline(ra)} != fast-forward {_timeline(rb)}; {hint}"
    ca, _ = a.loop.batches.to_columns()
    cb, _ = b.loop.batches.to_columns()
    for key in ca:
        assert np.array_equal(ca[key], cb[key]), f"batch column {key!r} differs; {hint}"
    va, na = a.loop.itl.to_arrays()
    vb, nb = b.loop.itl.to_arrays()
    assert np.array_equal(va, vb) and np.array_equal(na, nb), f"inter-token latencies differ; {hint}"


class GlobalSchedulerConformance:
    """Property tests for a global scheduler (router); subclass and set ``scheduler``."""

    #: the GlobalScheduler subclass under test
    scheduler: ClassVar[type | None] = None
    #: Config fields (a dict) or a Config instance
    config: ClassVar[Any] = None
    num_replicas: ClassVar[int] = 3
    #: replica policy behind the router (default Sarathi-Serve, chunk 32, batch cap 4)
    #: and its Config (a dict of fields or an instance)
    replica_scheduler: ClassVar[type | None] = None
    replica_config: ClassVar[Any] = None
    #: KV cache of each replica: blocks x tokens per block
    num_blocks: ClassVar[int] = 32
    block_size: ClassVar[int] = 4
    #: Hypothesis examples per property, and the largest trace drawn
    max_examples: ClassVar[int] = 20
    derandomize: ClassVar[bool] = False
    max_requests: ClassVar[int] = 30

    def _cls(self):
        if self.scheduler is None:
            raise TypeError(f"{type(self).__name__} must set 'scheduler' to the GlobalScheduler class under test")
        return self.scheduler

    def make_config(self):
        """The router Config instance the runs use."""
        cls = self._cls()
        if self.config is None or isinstance(self.config, dict):
            return cls.Config(**(self.config or {}))
        return self.config

    def _replica(self):
        if self.replica_scheduler is not None:
            cls, cfg = self.replica_scheduler, self.replica_config
            if cfg is None or isinstance(cfg, dict):
                cfg = cls.Config(**(cfg or {}))
            return cls, cfg
        from vidur.builtin.policies.sarathi import SarathiScheduler

        return SarathiScheduler, SarathiScheduler.Config(chunk_size=32, max_batch_size=4, watermark_fraction=0.0)

    def trace_strategy(self):
        """Traces dense enough that requests arrive while replicas decode."""
        cap = self.num_blocks * self.block_size
        return traces(max_size=self.max_requests, max_prompt=int(cap * 0.4), max_output=int(cap * 0.3), max_gap=0.02)

    def run_trace(
        self, trace: Trace, *, fast_forward: bool = False, seed: int = 0, eager: bool = False
    ) -> ClusterHarness:
        """Route and run ``trace`` over ``num_replicas`` replicas. ``eager=True``
        turns the replica policy's ``lazy_decode`` off, so every decoding
        request's fields are current whenever ``route()`` runs."""
        cls, cfg = self._replica()
        if eager and cls.lazy_decode:
            cls = type(cls.__name__, (cls,), {"lazy_decode": False, "__module__": cls.__module__})
        h = ClusterHarness(
            self._cls(),
            self.make_config(),
            num_replicas=self.num_replicas,
            scheduler_cls=cls,
            scheduler_config=cfg,
            num_blocks=self.num_blocks,
            block_size=self.block_size,
            seed=seed,
            fast_forward=fast_forward,
        )
        h.add_trace(trace)
        routes = h.routes
        n = self.num_replicas
        inner = h.router.route

        def checked(req):
            i = inner(req)
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
                raise AssertionError(
                    f"{type(h.router).__name__}.route() returned {i!r} for request {req.id}; "
                    f"it must return a replica index in range({n})"
                )
            return int(i)

        h.router.route = checked
        serial = sum(isolated_time(h.estimator, p, o) for _, p, o in trace)
        h.run(max_time=trace.last_arrival + 16 * serial + 1.0)
        assert len(routes) == len(trace)
        return h

    def test_declares_name_and_config(self):
        from vidur.scheduler.global_base import GlobalScheduler

        cls = self._cls()
        assert isinstance(cls, type) and issubclass(cls, GlobalScheduler), f"{cls!r} must subclass GlobalScheduler"
        assert _valid_name(cls.name), f"{cls.__name__}.name must be a short name like 'my_policy', got {cls.name!r}"
        assert attrs.has(cls.Config), f"{cls.__name__}.Config must be an attrs class"
        cls.Config()
        assert isinstance(cls.needs_live_state, bool)
        assert isinstance(cls.decides_upfront, bool)
        self.make_config()

    def test_routes_are_valid_and_every_request_completes_once(self):
        def check(trace):
            h = self.run_trace(trace)
            assert not h.unfinished, f"{len(h.unfinished)} requests never finished"
            assert h.loop.completed == len(h.requests)
            for r, i in zip(h.requests, h.routes):
                assert r.replica == i and math.isfinite(r.completion)
            for s in h.schedulers:
                assert not s.waiting and not s.running and s.kv.used == 0

        _run_property(self, self.trace_strategy(), check)

    def test_deterministic_under_a_seed(self):
        def check(args):
            trace, seed = args
            a = self.run_trace(trace, seed=seed)
            b = self.run_trace(trace, seed=seed)
            assert a.routes == b.routes, "the same seed and trace gave different routes"
            for ra, rb in zip(a.requests, b.requests):
                assert _timeline(ra) == _timeline(rb)

        _run_property(self, st.tuples(self.trace_strategy(), st.integers(0, 2**32 - 1)), check)

    def test_fast_forward_equals_stepping(self):
        def check(trace):
            a = self.run_trace(trace, fast_forward=False)
            b = self.run_trace(trace, fast_forward=True)
            assert a.routes == b.routes, (
                "routes differ with fast-forward on: route() reads state the engine updates in blocks; "
                "set needs_live_state = True"
            )
            _assert_same_run(a, b, "set needs_live_state = True if route() reads token-level progress")

        _run_property(self, self.trace_strategy(), check)

    def test_upfront_routes_ignore_replica_state(self):
        """A router that sets ``decides_upfront`` is asked for every route before the
        simulation (parallel replica groups): its routes during a run must equal the
        routes it gives the same requests, in order, over replicas that never run."""
        if not self._cls().decides_upfront:
            import pytest

            pytest.skip("the router does not set decides_upfront")

        def check(args):
            trace, seed = args
            ran = self.run_trace(trace, seed=seed)
            cls, cfg = self._replica()
            idle = ClusterHarness(self._cls(), self.make_config(), num_replicas=self.num_replicas,
                                  scheduler_cls=cls, scheduler_config=cfg, num_blocks=self.num_blocks,
                                  block_size=self.block_size, seed=seed)
            idle.add_trace(trace)
            upfront = [idle.router.route(r) for r in idle.requests]
            assert ran.routes == upfront, (
                f"{self._cls().__name__} sets decides_upfront but its routes depend on the replicas' state "
                "(they differ between a run and the same requests over idle replicas); set decides_upfront = False"
            )

        _run_property(self, st.tuples(self.trace_strategy(), st.integers(0, 2**32 - 1)), check)

    def test_routes_read_synced_state(self):
        """Requests decoding in a replica's lazy decode group when a request
        arrives have stale ``kv_len``/``blocks``/``last_token``: a router that
        reads them without ``replica.sync_decoding()`` routes differently than
        over replicas that update every request eagerly."""
        if not self._replica()[0].lazy_decode:
            pytest.skip("the replica policy does not set lazy_decode")

        def check(trace):
            a = self.run_trace(trace)
            b = self.run_trace(trace, eager=True)
            assert a.routes == b.routes, (
                f"{self._cls().__name__}: routes differ when replicas decode in a lazy group: route() reads "
                "kv_len/blocks/last_token of decoding requests without calling replica.sync_decoding() first"
            )
            _assert_same_run(a, b, "route() must call replica.sync_decoding() before reading per-request progress")

        _run_property(self, self.trace_strategy(), check)
