"""Invariants of the event loop under every built-in replica scheduler (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidur.builtin.policies.faster_transformer import FasterTransformerScheduler
from vidur.builtin.policies.lightllm import LightLLMScheduler
from vidur.builtin.policies.sglang import SGLangScheduler
from vidur.builtin.policies.orca import OrcaScheduler
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.builtin.policies.vllm import VLLMScheduler
from vidur.testing.harness import ReplicaHarness

SCHEDULERS = {
    "vllm": (VLLMScheduler, {"max_tokens_in_batch": 64, "watermark_fraction": 0.0}),
    "sarathi": (SarathiScheduler, {"chunk_size": 16}),
    "orca": (OrcaScheduler, {}),
    "faster_transformer": (FasterTransformerScheduler, {}),
    "lightllm": (LightLLMScheduler, {"max_waiting_iters": 3}),
    "sglang": (SGLangScheduler, {"chunked_prefill_size": 16, "prefix_caching": False}),  # these checks count no cache hits
}

workloads = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=0.05, allow_nan=False),  # gap to previous arrival
        st.integers(min_value=1, max_value=40),  # prompt
        st.integers(min_value=1, max_value=30),  # output
    ),
    min_size=1,
    max_size=25,
)


def run(name, reqs, *, fast, num_blocks=24, block_size=4, max_batch_size=4, lazy=True):
    cls, extra = SCHEDULERS[name]
    if not lazy:  # reference: every decoding request updated one by one
        cls = type(cls.__name__ + "Eager", (cls,), {"lazy_decode": False})
    h = ReplicaHarness(cls, cls.Config(max_batch_size=max_batch_size, **extra),
                       num_blocks=num_blocks, block_size=block_size, fast_forward=fast)
    t = 0.0
    for gap, p, o in reqs:
        t += gap
        h.add(p, o, at=t)
    h.run()
    return h


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=workloads)
def test_invariants(name, reqs):
    h = run(name, reqs, fast=False)
    cols, _ = h.loop.batches.to_columns()
    # every request finishes exactly once, with all its tokens
    assert all(r.generated == r.output for r in h.requests)
    assert all(np.isfinite(r.completion) for r in h.requests)
    assert h.loop.completed == len(h.requests)
    # tokens are conserved: every processed token is either in the KV cache when its
    # request completes (prompt + output - 1 of them) or was discarded by a preemption
    processed = int(cols["prefill_tokens"].sum() + cols["num_decode"].sum())
    kept = sum(r.prompt + r.output - 1 for r in h.requests)
    assert processed == kept + sum(r.recomputed for r in h.requests)
    if not any(r.preemptions for r in h.requests):
        assert int(cols["prefill_tokens"].sum()) == sum(r.prompt for r in h.requests)
    # KV blocks never exceed capacity
    assert (cols["kv_blocks_used"] <= h.kv.num_blocks).all()
    assert h.kv.used == 0
    # time never goes backwards; each request's timeline is ordered
    assert (np.diff(cols["start"]) >= 0).all() and (cols["end"] >= cols["start"]).all()
    assert (cols["start"][1:] >= cols["end"][:-1]).all()  # one replica, one stage: no overlap
    for r in h.requests:
        assert r.arrival <= r.first_scheduled <= r.first_token <= r.completion
    # ITL samples: one per output token after the first
    assert int(h.loop.itl.to_arrays()[1].sum()) == sum(r.output - 1 for r in h.requests)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@settings(max_examples=30, deadline=None)
@given(reqs=workloads, num_blocks=st.integers(min_value=20, max_value=80))
def test_fast_forward_equals_stepping(name, reqs, num_blocks):
    a = run(name, reqs, fast=False, num_blocks=num_blocks)
    b = run(name, reqs, fast=True, num_blocks=num_blocks)
    for ra, rb in zip(a.requests, b.requests):
        assert (ra.first_scheduled, ra.first_token, ra.completion, ra.preemptions, ra.recomputed) == (
            rb.first_scheduled, rb.first_token, rb.completion, rb.preemptions, rb.recomputed)
    ca, _ = a.loop.batches.to_columns()
    cb, _ = b.loop.batches.to_columns()
    for key in ca:
        assert np.array_equal(ca[key], cb[key]), key
    va, na = a.loop.itl.to_arrays()
    vb, nb = b.loop.itl.to_arrays()
    assert np.array_equal(va, vb) and np.array_equal(na, nb)


def _same_results(a, b):
    for ra, rb in zip(a.requests, b.requests):
        assert (ra.first_scheduled, ra.first_token, ra.completion, ra.preemptions, ra.recomputed, ra.kv_len) == (
            rb.first_scheduled, rb.first_token, rb.completion, rb.preemptions, rb.recomputed, rb.kv_len)
    ca, _ = a.loop.batches.to_columns()
    cb, _ = b.loop.batches.to_columns()
    for key in ca:
        assert np.array_equal(ca[key], cb[key]), key
    va, na = a.loop.itl.to_arrays()
    vb, nb = b.loop.itl.to_arrays()
    assert np.array_equal(va, vb) and np.array_equal(na, nb)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@settings(max_examples=30, deadline=None)
@given(reqs=workloads, num_blocks=st.integers(min_value=20, max_value=80), fast=st.booleans())
def test_lazy_decode_group_equals_per_request_updates(name, reqs, num_blocks, fast):
    """The engine's lazy decode group gives exactly what updating every request does."""
    _same_results(
        run(name, reqs, fast=fast, num_blocks=num_blocks, lazy=True),
        run(name, reqs, fast=fast, num_blocks=num_blocks, lazy=False),
    )
