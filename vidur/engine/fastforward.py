"""Fast-forward: runs of iterations that stepping would form the same way, in one event.

Two kinds of run, both ending at the next arrival (and pending event, with follow-ups), by
max_time, before the KV blocks run out and at the first completion:

- **decode runs** (:func:`fast_forward`): a steady decode-only batch (the policy's
  ``is_steady``) repeated ``k`` times. A lazy decode group's run that looks short (a guess of
  how many repetitions fit before the bound, from the first one's duration: at most
  :data:`SCALAR_RUN`) is stepped in a scalar loop that prices each repetition as stepping
  does, with ``decode_iteration_time`` (through the estimator's ``decode_pricer``, the same
  values) (:func:`_scalar_run`, a couple of microseconds a repetition); a longer one is priced as arrays with ``decode_iteration_times`` (bitwise
  equal to the scalar price), only as far as the bound: the guessed count, doubled while the
  last priced repetition still ends before it.
- **prefill runs** (:func:`prefill_run`): a prompt's successive chunks beside a steady decode
  group, with no arrival in between (the policy's ``steady_prefill``: Sarathi). Each
  iteration's shape (the chunk after the prompt's prefix so far, the decodes' contexts one
  longer each step) is priced with ``forward_time`` + ``cpu_overhead`` exactly as stepping
  prices it; the run ends with the prompt's last chunk at the latest, whose end the event
  loop then applies as usual (first token, the request joins the decode group).

The rows written into the batch log, the ITL samples and the clock are the ones stepping
would write, so ``fast_forward=False`` (``--step``) gives byte-identical outputs
(``tests/test_fast_paths.py``, ``tests/test_properties.py``, the conformance suite).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from vidur.engine.log import FLUSH_RUN_VALUES, FLUSH_VALUES, NCOL
from vidur.entities.batch import Batch
from vidur.errors import PolicyOutputError
from vidur.estimate.base import BatchShape
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


#: expected repetitions up to which a run is stepped in a scalar loop (a few microseconds
#: each) rather than priced as numpy arrays (some 40 microseconds per run)
SCALAR_RUN = 24


def _scalar_run(loop: EventLoop, rep: ReplicaState, batch: Batch, now: float, d0: float, k: int,
                bound: float) -> tuple[float, int]:
    """:func:`fast_forward` of a lazy group's step for a short run: the repetitions one by one
    with the scalar pricing stepping uses (``decode_iteration_time``'s values through
    ``decode_pricer``, the same overlap arithmetic); each step is logged compactly as its end
    and KV blocks in use, the run's head after it (:meth:`~vidur.engine.log.BatchLog.pack_runs`
    rebuilds the rows and the ITL samples)."""
    group = batch.group
    sched, kv, est = rep.scheduler, rep.scheduler.kv, rep.estimator
    n = len(batch.decodes)
    step, res, bs = group.step, group.residue, group.bs
    free = kv.num_blocks - kv.used
    used0 = kv.used
    grown = 0  # blocks the group takes for the repetitions after the first
    dkv = batch.shape.decode_kv
    overlap = rep.overlap
    cpu = est.cpu_overhead(n) if overlap else 0.0
    max_time = loop.max_time
    log = loop.batches
    steps = log.run_rows  # each step's (end, kv blocks used); the run's head is logged after the loop
    dkv0 = dkv
    end = now + d0
    steps.extend((end, used0))
    first_end = end
    price = est.decode_pricer(n)
    j = 1
    while j < k and end < bound:
        c = res[(-(step + j)) % bs]  # members whose next token needs a block
        if grown + c > free:
            break
        d = price(dkv + n)
        if overlap:
            d = max(d - cpu, cpu)
        e = end + d
        if e > max_time:
            break
        grown += c
        dkv += n
        steps.extend((e, used0 + grown))  # and an ITL sample e - end of weight n (pack_runs)
        end = e
        j += 1
    log.run_heads.extend((rep.index, n, now, dkv0, j))
    if j > 1:
        sched.on_repeat(j - 1)
        kv.used = used0 + grown
        batch.end = first_end
    if len(steps) >= FLUSH_RUN_VALUES:
        log.flush()
        loop.itl.flush()
    return end, j


def fast_forward(loop: EventLoop, rep: ReplicaState, batch: Batch, now: float, d0: float) -> tuple[float, int]:
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
    k = group.steps_to_first_finish() if group is not None else first_finish(batch)
    bound = loop.next_arrival if loop.next_arrival < loop.max_time else loop.max_time
    if loop.followups is not None and loop.heap:
        # a completion elsewhere may release a request before the next known
        # arrival; none happens before the next pending event
        bound = min(bound, loop.heap[0][0] + loop.min_think)
    # the repetitions that can start before the bound, guessed from the first one's duration
    # (k may be thousands of steps to the first completion, the bound a few away)
    m = min(k, int((bound - now) / d0) + 2) if bound < math.inf and d0 > 0 else k
    if group is not None and m <= SCALAR_RUN:
        return _scalar_run(loop, rep, batch, now, d0, k, bound)
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
    overlap = rep.overlap
    cpu = est.cpu_overhead(n) if overlap else 0.0

    def times(i: int, j: int) -> np.ndarray:
        """Durations of repetitions i..j-1 (elementwise: the same whatever the split)."""
        d = est.decode_iteration_times(n, kv0 + n * np.arange(i, j, dtype=np.float64))
        return np.maximum(d - cpu, cpu) if overlap else d

    # price only the repetitions that can start before the bound (the KV search may have
    # lowered k), doubling while the last priced one still ends before it
    m = min(m, k)
    d = times(0, m)
    t = np.cumsum(np.concatenate(([now], d)))
    while m < k and t[m] < bound:
        m2 = min(k, 2 * m)
        d2 = times(m, m2)
        t = np.concatenate((t, np.cumsum(np.concatenate(([t[m]], d2)))[1:]))
        d = np.concatenate((d, d2))
        m = m2
    k = m
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


def prefill_run(loop: EventLoop, rep: ReplicaState, batch: Batch, end: float, cap: int, last: bool) -> tuple[float, int]:
    """Run a prompt's next chunks beside the steady decode group in one event.

    ``batch`` (already logged, ending at ``end``) is one group step of every decoding request
    plus chunk ``q`` of the one prefilling request; the policy's
    :meth:`~vidur.scheduler.base.ReplicaScheduler.steady_prefill` said the next iterations are
    the same decodes plus chunks of ``min(remaining, cap)`` (the last one shorter than ``cap``
    only if ``last``). Iterations are added while each starts before the next arrival (and
    pending event, with follow-ups) and max_time, ends by max_time, the group's KV growth fits
    and no member has finished; the block ends with the prompt's last chunk at the latest.
    Each iteration is priced with the same estimator calls as stepping (``forward_time`` of
    its shape plus ``cpu_overhead``, summed onto the clock the same way), so the rows, ITL
    samples and clock are stepping's. Returns (end of the last iteration, iterations ``k``);
    with ``k > 1`` the batch's chunk becomes the chunks' sum and ``batch.end`` the first
    iteration's end, for ``_batch_end``."""
    if cap.__class__ is not int or cap < 1:
        raise PolicyOutputError("replica_scheduler", f"steady_prefill() returned a chunk cap of {cap!r}; it must be an int >= 1")
    group = batch.group
    req = batch.prefills[0]
    target = req.prefill_target
    ctx = req.kv_len + batch.chunks[0]  # the prompt's tokens cached before the next chunk
    if ctx >= target:
        return end, 1
    bound = loop.next_arrival if loop.next_arrival < loop.max_time else loop.max_time
    if loop.followups is not None and loop.heap:
        bound = min(bound, loop.heap[0][0] + loop.min_think)
    if end >= bound:
        return end, 1
    kv, est = rep.scheduler.kv, rep.estimator
    n = len(batch.decodes)
    f = group.steps_to_first_finish()  # the group step that completes a member ends the block
    bs, step, res = group.bs, group.step, group.residue
    free = kv.num_blocks - kv.used
    used0 = kv.used
    grown = 0  # blocks the group takes for steps after the first
    dkv = batch.shape.decode_kv
    overlap = rep.overlap
    max_time = loop.max_time
    index = rep.index
    rows = loop.batches.rows
    itl_v, itl_c = loop.itl.values, loop.itl.counts
    start = end
    total = batch.chunks[0]
    k = 1
    first_end = end
    while k < f and ctx < target and start < bound:
        q = target - ctx
        if q > cap:
            q = cap
        elif q < cap and not last:
            break
        c = res[(-(step + k)) % bs]  # members whose next token needs a block
        if grown + c > free:
            break
        dkv += n
        # BatchShape(num_decode=n, decode_kv=dkv) plus add_prefill(q, ctx), in one call
        s = BatchShape(1, q, q * (ctx + (q + 1) / 2), ctx + q, q * q, n, dkv)
        if overlap:
            fwd, cpu = est.forward_time(s), est.cpu_overhead(n + 1)
            e = start + (fwd if fwd > cpu else cpu)
        else:
            e = start + (est.forward_time(s) + est.cpu_overhead(n + 1))
        if e > max_time:
            break
        grown += c
        kv.used = used0 + grown
        rows.extend((index, start, e, n + 1, 1, q, s.prefill_work, n, dkv, used0 + grown, s.prefill_kv))
        if n:
            itl_v.append(e - start)
            itl_c.append(n)
        ctx += q
        total += q
        start = e
        k += 1
    if k > 1:
        rep.scheduler.on_repeat(k - 1)
        batch.chunks[0] = total
        batch.end = first_end
        if len(rows) >= FLUSH_VALUES:
            loop.batches.flush()
            loop.itl.flush()
    return start, k
