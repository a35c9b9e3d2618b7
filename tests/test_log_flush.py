"""The event loop's logs packed into numpy chunks as they grow (issue 14 item 1):
the records are the same whatever the chunk size."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import vidur.engine.fastforward as ff_mod
import vidur.engine.loop as loop_mod
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.engine.log import NCOL, merge_samples
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
    saved = loop_mod.FLUSH_VALUES, ff_mod.FLUSH_VALUES, ff_mod.FLUSH_RUN_VALUES
    loop_mod.FLUSH_VALUES = ff_mod.FLUSH_VALUES = every * NCOL
    ff_mod.FLUSH_RUN_VALUES = every * 2  # decode runs' compact steps (two values each)
    try:
        chunked = _records(reqs, stages, fast)
    finally:
        loop_mod.FLUSH_VALUES, ff_mod.FLUSH_VALUES, ff_mod.FLUSH_RUN_VALUES = saved
    _same(whole, chunked)


def test_compact_decode_runs_rebuild_their_rows():
    """Runs logged as (head, per-step end and KV blocks) come back as the rows a row per step
    would have written, in any number of packs."""
    from vidur.engine.log import BatchLog, ITLLog
    from vidur.metrics.records import BATCH_COLUMNS

    runs = [(0, 3, 1.0, 40, [(1.5, 10), (2.25, 10), (3.0, 11)]), (2, 5, 7.0, 100, [(7.125, 20)]),
            (1, 1, 9.0, 7, [(9.5, 3), (10.0, 4)])]
    expect = []
    for rep, n, start, dkv, steps in runs:
        for j, (end, used) in enumerate(steps):
            row = dict.fromkeys(BATCH_COLUMNS, 0.0)
            row.update(replica=rep, start=start, end=end, num_seqs=n, num_decode=n, decode_kv=dkv + n * j,
                       kv_blocks_used=used)
            expect.append([row[c] for c in BATCH_COLUMNS])
            start = end
    weights: dict[float, int] = {}  # equal latencies are merged, their weights summed
    for _, n, _, _, steps in runs:
        for (prev, _), (end, _) in zip(steps, steps[1:]):
            weights[end - prev] = weights.get(end - prev, 0) + n
    itl_expect = sorted(weights.items())
    for pack_after in (None, 0, 1):
        log = BatchLog()
        log.itl = ITLLog()
        for i, (rep, n, start, dkv, steps) in enumerate(runs):
            for st_ in steps:
                log.run_rows.extend(st_)
            log.run_heads.extend((rep, n, start, dkv, len(steps)))
            if pack_after == i:
                log.flush()
        cols, _ = log.to_columns()
        got = np.column_stack([cols[c] for c in BATCH_COLUMNS]).astype(np.float64)
        want = np.array(sorted(expect, key=lambda r: (r[BATCH_COLUMNS.index("replica")], r[BATCH_COLUMNS.index("start")])))
        assert np.array_equal(got, want)
        v, c = log.itl.to_arrays()
        assert sorted(zip(v.tolist(), c.tolist())) == itl_expect


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


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 1e-3, 2.5, 7.0, 1e9]) | st.floats(0, 10),
                                  st.integers(1, 10**6)), min_size=1, max_size=60))
def test_merge_samples_matches_unique_and_bincount(samples):
    v = np.array([s[0] for s in samples], dtype=np.float64)
    c = np.array([s[1] for s in samples], dtype=np.int64)
    uniq, inv = np.unique(v, return_inverse=True)
    want = np.bincount(inv.ravel(), weights=c, minlength=len(uniq)).astype(np.int64)
    got_v, got_c = merge_samples(v.copy(), c.copy())
    assert got_v.tobytes() == uniq.tobytes()
    assert np.array_equal(got_c, want) and got_c.dtype == np.int64


def _merge_stable(v, c):
    """merge_samples as it was: a stable sort, the first of equal values standing for them."""
    perm = np.argsort(v, kind="stable")
    vs, cs = v[perm], c[perm]
    starts = np.flatnonzero(np.concatenate(([True], vs[1:] != vs[:-1])))
    return vs[starts], np.add.reduceat(cs, starts)


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(st.tuples(st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e-3, 2.5]) | st.floats(-10, 10),
                                  st.integers(1, 10**6)), min_size=1, max_size=60),
       float_counts=st.booleans())
def test_merge_samples_is_bitwise_the_stable_merge(samples, float_counts):
    # the unstable sort changes no bit of the answer: not the sign of a zero, not a float count's sum
    v = np.array([s[0] for s in samples], dtype=np.float64)
    c = np.array([s[1] * (1.1 if float_counts else 1) for s in samples],
                 dtype=np.float64 if float_counts else np.int64)
    want_v, want_c = _merge_stable(v, c)
    got_v, got_c = merge_samples(v.copy(), c.copy())
    assert got_v.tobytes() == want_v.tobytes()
    assert got_c.tobytes() == want_c.tobytes() and got_c.dtype == want_c.dtype
