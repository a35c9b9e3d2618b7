"""The event loop's logs packed into numpy chunks as they grow (issue 14 item 1):
the records are the same whatever the chunk size."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import vidur.engine.loop as loop_mod
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.engine.log import NCOL
from vidur.testing.harness import ReplicaHarness


def _records(reqs, stages, fast):
    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=16, max_batch_size=6),
                       num_blocks=512, block_size=4, num_stages=stages, fast_forward=fast)
    h.add_many(reqs)
    h.run()
    batches, spans = h.loop.batches.to_columns()
    return batches, spans, h.loop.itl.to_arrays()


def _same(a, b):
    (ba, sa, ia), (bb, sb, ib) = a, b
    assert ba.keys() == bb.keys()
    for k in ba:
        assert np.array_equal(ba[k], bb[k]), k
    assert (sa is None) == (sb is None)
    if sa is not None:
        for k in sa:
            assert np.array_equal(sa[k], sb[k]), k
    assert np.array_equal(ia[0], ib[0]) and np.array_equal(ia[1], ib[1])


@settings(max_examples=30, deadline=None)
@given(
    reqs=st.lists(st.tuples(st.integers(1, 60), st.integers(1, 40)), min_size=1, max_size=25),
    stages=st.integers(1, 3),
    fast=st.booleans(),
    every=st.integers(1, 7),
)
def test_records_do_not_depend_on_flush_size(reqs, stages, fast, every):
    whole = _records(reqs, stages, fast)
    saved = loop_mod.FLUSH_VALUES
    loop_mod.FLUSH_VALUES = every * NCOL
    try:
        chunked = _records(reqs, stages, fast)
    finally:
        loop_mod.FLUSH_VALUES = saved
    _same(whole, chunked)


def test_to_columns_twice_gives_the_same():
    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=16, max_batch_size=6),
                       num_blocks=512, block_size=4)
    h.add_many([(30, 10), (12, 5)])
    h.run()
    a, _ = h.loop.batches.to_columns()
    b, _ = h.loop.batches.to_columns()
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert len(a["start"]) > 0


def test_itl_merge_twice_gives_the_same():
    h = ReplicaHarness(SarathiScheduler, SarathiScheduler.Config(chunk_size=16, max_batch_size=6),
                       num_blocks=512, block_size=4)
    h.add_many([(30, 10), (12, 5), (7, 9)])
    h.run()
    a = h.loop.itl.to_arrays()
    b = h.loop.itl.to_arrays()
    assert len(a[0]) > 0
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
