"""Fast-forward: a steady decode-only batch repeated ``k`` times in one vectorised step.

The event loop calls :func:`fast_forward` when a pure-decode batch would repeat
identically (no arrival, completion or KV shortage in between); the rows it
writes into the batch log are the ones stepping would write, so
``fast_forward=False`` (``--step``) gives byte-identical outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vidur.engine.log import NCOL
from vidur.entities.batch import Batch
from vidur.metrics.records import BATCH_COLUMNS

if TYPE_CHECKING:
    from vidur.engine.loop import EventLoop, ReplicaState

# batch-log columns (as in BATCH_COLUMNS) written by the fast-forward block
_COL = {c: i for i, c in enumerate(BATCH_COLUMNS)}
C_REPLICA, C_START, C_END, C_NUM_SEQS = _COL["replica"], _COL["start"], _COL["end"], _COL["num_seqs"]
C_NUM_DECODE, C_DECODE_KV, C_KV_USED = _COL["num_decode"], _COL["decode_kv"], _COL["kv_blocks_used"]


def first_finish(batch: Batch) -> int:
    """Decode steps until the first request of a decode-only batch finishes."""
    if batch.group is not None:
        return batch.group.steps_to_first_finish()
    return min([r.final_kv - r.kv_len for r in batch.decodes])


def fast_forward(loop: EventLoop, rep: ReplicaState, batch: Batch, now: float) -> tuple[float, int]:
    """Run the steady decode batch ``k`` times at once, ``k`` bounded by the
    first completion, KV capacity, the next arrival and max_time (every repetition
    starts before the next arrival and ends by max_time): the KV blocks
    and scheduler counters advance, ``k`` batch-log rows and ``k - 1`` ITL samples
    are appended. Returns (end of the last repetition, ``k``) for the caller's
    BATCH_END event."""
    sched, kv, est = rep.scheduler, rep.scheduler.kv, rep.estimator
    reqs = batch.decodes
    n = len(reqs)
    group = batch.group
    bs = kv.block_size
    k = first_finish(batch)
    if group is not None:
        first = group.crossers(1)  # allocated when the batch was formed

        def extra(steps: int) -> int:
            return group.crossers(steps) - first

    else:
        ctx = np.fromiter((r.kv_len for r in reqs), dtype=np.int64, count=n)
        held = np.fromiter((r.blocks for r in reqs), dtype=np.int64, count=n)

        def extra(steps: int) -> int:
            need = -(-(ctx + steps) // bs) - held
            return int(need[need > 0].sum())

    if k > 1:
        free = kv.num_blocks - kv.used
        if extra(k) > free:  # memory binds before a completion: largest k that fits
            lo, hi = 1, k
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if extra(mid) <= free:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
    kv0 = batch.shape.decode_kv
    d = est.decode_iteration_times(n, kv0 + n * np.arange(k, dtype=np.float64))
    if rep.overlap:
        cpu = est.cpu_overhead(n)
        d = np.maximum(d - cpu, cpu)
    t = np.cumsum(np.concatenate(([now], d)))
    bound = min(loop.next_arrival, loop.max_time)
    if loop.followups is not None and loop.heap:
        # a completion elsewhere may release a request before the next known
        # arrival; none happens before the next pending event
        bound = min(bound, loop.heap[0][0] + loop.min_think)
    if t[k - 1] >= bound:
        k = max(1, int(np.searchsorted(t[:k], bound, side="left")))
        t = t[: k + 1]
        d = d[:k]
    if t[k] > loop.max_time:
        # a stepped run stops before the end events after max_time, and a repetition's ITL samples
        # are taken at its end: only repetitions that end by max_time go into one block (k = 1
        # repeats nothing: the one batch is logged, its end is never reached, as when stepping)
        k = max(1, int(np.searchsorted(t[1 : k + 1], loop.max_time, side="right")))
        t = t[: k + 1]
        d = d[:k]
    if k > 1:
        sched.on_repeat(k - 1)
        if group is not None:
            c = group.crossers_per_step(k)
            used = kv.used + (np.cumsum(c) - c[0])
            kv.used += extra(k)
        else:
            steps = np.arange(1, k + 1, dtype=np.int64)
            need = -(-(ctx[:, None] + steps[None, :]) // bs) - held[:, None]
            used = kv.used + np.maximum(need, 0).sum(axis=0)
            for r in reqs:
                kv.ensure(r, r.kv_len + k)
    else:
        used = np.array([kv.used], dtype=np.int64)
    block = np.zeros((k, NCOL))  # the prefill columns stay 0
    block[:, C_REPLICA] = rep.index
    block[:, C_START] = t[:k]
    block[:, C_END] = t[1:]
    block[:, C_NUM_SEQS] = n
    block[:, C_NUM_DECODE] = n
    block[:, C_DECODE_KV] = kv0 + n * np.arange(k, dtype=np.int64)
    block[:, C_KV_USED] = used
    loop.batches.add_block(block)
    if k > 1:
        loop.itl.block_values.append(np.diff(t[1:]))
        loop.itl.block_counts.append(np.full(k - 1, n, dtype=np.int64))
        batch.end = float(t[1])  # end of the first repetition, for ITL bookkeeping
    return float(t[k]), k
