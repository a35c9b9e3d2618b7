"""The discrete-event loop: arrivals -> global scheduler -> replicas -> stages.

Arrivals are a pre-generated sorted array merged with a heap of
(time, kind, seq, replica, batch, repeats) events, the kind being the event's
priority at equal times: arrivals come first, then wake-ups of idle replicas (so requests arriving
together are batched together), then batch ends, then stage-0-free events,
then creation order (the per-loop counter). Runs of iterations that the
policy would form the same way are fast-forwarded in one event
(:mod:`vidur.engine.fastforward`): repeated pure-decode batches, and a
prompt's successive prefill chunks beside a steady decode group;
``fast_forward=False`` steps every iteration, so the tests can check that
the two give identical results. Decoding requests of a replica advance as
one lazy :class:`~vidur.scheduler.decode_group.DecodeGroup` when the policy
allows it.

The requests are a list of :class:`Request` objects (the test harnesses),
which the loop reads and leaves in place, or a
:class:`~vidur.engine.requests.TableRequests` (a simulation's): its request
objects are made a block ahead of their arrival and handed back through
``record`` when they complete, which writes them into columns and keeps no
object.

Closed-loop workloads (multi-turn sessions) give ``followups`` (a
:class:`~vidur.engine.requests.Followups`, taken from the ``TableRequests``
when not given): ``get(row)`` is the request released by the completion of
table row ``row`` and its think time.
Released requests arrive through the heap; request ids are then handed out
at arrival, so ids stay in arrival order. Without ``followups`` none of this
costs anything.

An optional ``executor(replica_index, batch) -> seconds`` replaces the
estimator for single-stage replicas: it runs the real batch (the validation
reference executor) and the clock advances by the time it returns; it turns
fast-forward off.
"""

from __future__ import annotations

import heapq
import math
from typing import Callable, Sequence

import numpy as np

from vidur.engine import checks
from vidur.engine.fastforward import fast_forward as run_fast_forward
from vidur.engine.fastforward import first_finish
from vidur.engine.fastforward import prefill_run as run_prefill
from vidur.engine.log import FLUSH_VALUES, BatchLog, ITLLog
from vidur.engine.requests import Followups, TableRequests
from vidur.entities.batch import Batch
from vidur.entities.request import INF, Request
from vidur.estimate.base import RuntimeEstimator
from vidur.scheduler.base import ReplicaScheduler
from vidur.scheduler.book import ReplicaBook
from vidur.scheduler.global_base import GlobalScheduler

# Event kinds, which are also their priorities at equal times (lower first);
# arrivals from the pre-generated table come before all of them.
ARRIVAL = -1  # a closed-loop request released by a completion
WAKE = 0  # an idle replica got work: schedule once all same-time arrivals are in
BATCH_END = 1
STAGE0_FREE = 2


class ReplicaState:
    """Engine-side state of one replica: its scheduler, estimator and pipeline."""

    __slots__ = (
        "index", "scheduler", "book", "estimator", "pp", "stage_layers", "stage_free", "busy", "wake_pending", "caching",
        "overlap", "max_batch",
    )

    def __init__(self, index: int, scheduler: ReplicaScheduler, estimator: RuntimeEstimator, num_layers: int, pp: int):
        self.index = index
        self.scheduler = scheduler
        self.book = scheduler._book  # the engine's bookkeeping of the replica's requests
        self.estimator = estimator
        self.pp = pp
        base, extra = divmod(num_layers, pp)
        self.stage_layers = [base + (1 if s < extra else 0) for s in range(pp)]
        self.stage_free = [0.0] * pp
        self.busy = False  # pp == 1: a batch is in flight; pp > 1: stage 0 is busy
        self.wake_pending = False
        self.caching = scheduler.kv.prefix_caching  # register computed blocks after prefill chunks
        #: the engine overlaps each step's host work with the previous GPU step (vLLM V1's
        #: async scheduling): an iteration takes max(device, host) instead of their sum
        self.overlap = bool(getattr(scheduler, "host_overlap", False))
        #: the policy's batch cap, checked on every batch it returns
        self.max_batch = getattr(scheduler.config, "max_batch_size", None) or math.inf


class EventLoop:
    """Runs requests through replicas until every request finishes (or max_time)."""

    def __init__(
        self,
        requests: Sequence[Request] | TableRequests,
        replicas: list[ReplicaState],
        router: GlobalScheduler,
        *,
        fast_forward: bool = True,
        max_time: float | None = None,
        record_spans: bool = False,
        on_complete: Callable[[int], None] | None = None,
        executor: Callable[[int, Batch], float] | None = None,
        followups: Followups | None = None,
        batch_log: BatchLog | None = None,
    ):
        self.requests = requests
        #: a TableRequests' completion sink (None for a list of requests: the caller keeps them)
        self.record = None
        if isinstance(requests, TableRequests):
            self.record = requests.record
            if followups is None:
                followups = requests.followups
        self.replicas = replicas
        self.router = router
        self.executor = executor
        self.fast_forward = fast_forward and not router.needs_live_state and executor is None
        self.max_time = math.inf if max_time is None else max_time
        self.record_spans = record_spans or any(r.pp > 1 for r in replicas)
        self.on_complete = on_complete
        self.batches = BatchLog() if batch_log is None else batch_log
        self.summary = self.batches.summary  # metrics.batch_log: summary (told the latest completion)
        self.itl = ITLLog()
        self.batches.itl = self.itl  # the decode runs' ITL samples, when they are packed
        self.heap: list[tuple] = []
        self.seq = 0
        self.now = 0.0
        self.next_arrival = math.inf
        self.completed = 0
        self.followups = followups
        self.pending: list[float] = []  # arrival times of released requests not yet arrived
        self.next_id = 0  # with followups: ids in arrival order
        self.min_think = followups.min_think if followups is not None else 0.0

    # -- main loop ---------------------------------------------------------
    def run(self) -> float:
        """Process every event; returns the time of the last one."""
        heap = self.heap
        src = self.requests
        blocks = src.blocks() if isinstance(src, TableRequests) else iter([([r.arrival for r in src], src)])
        arrivals, reqs = next(blocks, ((), ()))
        n = len(arrivals)
        ptr = 0
        max_time = self.max_time
        pop = heapq.heappop
        replicas = self.replicas
        nrep = len(replicas)
        route = self.router.route
        closed = self.followups is not None
        inf = math.inf
        while True:
            ta = arrivals[ptr] if ptr < n else inf
            if heap and heap[0][0] < ta:
                t, kind, _, rep, batch, repeats = pop(heap)
                if t > max_time:
                    break
                self.now = t
                if kind == BATCH_END:
                    self._batch_end(rep, batch, repeats, t)
                elif kind == ARRIVAL:
                    heapq.heappop(self.pending)
                    self._arrive(batch, t, ta)
                elif kind == WAKE:
                    rep.wake_pending = False
                    self._try_start(rep, t)
                else:
                    rep.busy = False
                    self._try_start(rep, t)
            elif ptr < n:
                if ta > max_time:
                    break
                self.now = ta
                req = reqs[ptr]
                ptr += 1
                if ptr == n:  # the next block of arrivals
                    arrivals, reqs = next(blocks, ((), ()))
                    n = len(arrivals)
                    ptr = 0
                if closed:
                    self._arrive(req, ta, arrivals[ptr] if ptr < n else inf)
                    continue
                self.next_arrival = arrivals[ptr] if ptr < n else inf
                i = route(req)
                if i.__class__ is not int or not 0 <= i < nrep:
                    i = checks.route_index(i, nrep, req)
                rep = replicas[i]
                req.replica = rep.index
                rep.scheduler.add_request(req)
                if not rep.busy and not rep.wake_pending:
                    rep.wake_pending = True
                    self._push(ta, WAKE, rep, None, 0)
            else:
                checks.stalled(self.replicas)  # every event done: no request may be left
                break
        for rep in self.replicas:
            rep.scheduler.sync_decoding()
        self.batches.pack_runs()  # the compact decode runs into rows and ITL samples
        return self.now

    def _arrive(self, req: Request, t: float, next_static: float) -> None:
        """A request arrives in closed-loop mode: number it, route it."""
        req.id = self.next_id
        self.next_id += 1
        req.arrival = t
        pending = self.pending
        self.next_arrival = min(next_static, pending[0]) if pending else next_static
        rep = self.replicas[checks.route_index(self.router.route(req), len(self.replicas), req)]
        req.replica = rep.index
        rep.scheduler.add_request(req)
        if not rep.busy and not rep.wake_pending:
            rep.wake_pending = True
            self._push(t, WAKE, rep, None, 0)

    def _release(self, done: list[Request], now: float) -> None:
        """Completions release the next turns of their sessions (after a think time)."""
        follow = self.followups
        for req in done:
            nxt = follow.get(req.content[2])
            if nxt is None:
                continue
            nreq, think = nxt
            t = now + think
            heapq.heappush(self.pending, t)
            if t < self.next_arrival:
                self.next_arrival = t
            self._push(t, ARRIVAL, None, nreq, 0)

    def _push(self, t: float, kind: int, rep: ReplicaState, batch, repeats: int) -> None:
        """An event at ``t``; at equal times lower kinds first, then creation order."""
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, rep, batch, repeats))

    # -- forming and pricing batches ------------------------------------------
    def _try_start(self, rep: ReplicaState, now: float) -> None:
        book = rep.book
        if rep.busy or book.num_in_flight >= rep.pp:
            return
        sched = rep.scheduler
        sched.now = now
        book.preempted = False
        batch = sched.schedule()
        if batch is None:
            return
        if batch.__class__ is not Batch:
            checks.check_batch(batch, rep.max_batch, rep.index, now)  # a subclass passes
        s = batch.shape
        if not 0 < s.num_prefill + s.num_decode <= rep.max_batch or s.num_prefill > 1:
            checks.check_batch(batch, rep.max_batch, rep.index, now)
        book.num_in_flight += 1
        batch.start = now
        if rep.pp == 1:
            self._start_single_stage(rep, batch, now)
        else:
            self._start_pipelined(rep, batch, now)

    def _start_single_stage(self, rep: ReplicaState, batch: Batch, now: float) -> None:
        est, sched, shape = rep.estimator, rep.scheduler, batch.shape
        rep.busy = True
        if self.executor is not None:
            end = now + self.executor(rep.index, batch)
            self._log_row(rep, batch, now, end)
            self._push(end, BATCH_END, rep, batch, 1)
            return
        num_prefill = shape.num_prefill
        if num_prefill:
            seqs = num_prefill + shape.num_decode
            if rep.overlap:
                fwd, cpu = est.forward_time(shape), est.cpu_overhead(seqs)
                end = now + (fwd if fwd > cpu else cpu)
            else:
                end = now + (est.forward_time(shape) + est.cpu_overhead(seqs))
            rows = self.batches.rows
            rows.extend(  # _log_row's row, inlined on the busiest path
                (
                    rep.index, now, end, seqs, num_prefill, shape.prefill_tokens, shape.prefill_work,
                    shape.num_decode, shape.decode_kv, sched.kv.used, shape.prefill_kv,
                )
            )
            if len(rows) >= FLUSH_VALUES:
                self.batches.flush()
                self.itl.flush()
            k = 1
            # a prompt's chunks beside a steady decode group: the next chunks in one event
            if (
                self.fast_forward
                and batch.group is not None
                and num_prefill == 1
                and end < self.next_arrival
                and not rep.caching
            ):
                req = batch.prefills[0]
                # chunks left after this one, all of whose KV blocks the request holds
                if req.kv_len + batch.chunks[0] < req.prefill_target <= req.blocks * sched.kv.block_size:
                    steady = sched.steady_prefill(batch)
                    if steady is not None:
                        end, k = run_prefill(self, rep, batch, end, *steady)
            self.seq += 1  # _push, inlined
            heapq.heappush(self.heap, (end, BATCH_END, self.seq, rep, batch, k))
            return
        # decode_iteration_time's value through the estimator's decode_pricer (the roofline keeps one
        # per batch size: a dict lookup instead of the whole call; equal values, checked at start-up)
        d0 = est.decode_pricer(shape.num_decode)(shape.decode_kv)
        if rep.overlap:  # the same arithmetic as fast_forward's
            cpu = est.cpu_overhead(shape.num_decode)
            d0 = max(d0 - cpu, cpu)
        end = now + d0
        # fast-forward a lazy group's step when a repetition may start before the next arrival
        # (short runs go through a scalar loop); requests stepped one by one only when a few
        # repetitions fit before the next arrival and the first completion (results are the
        # same either way)
        if (
            self.fast_forward
            and end < self.next_arrival
            and end < self.max_time
            and (batch.group is not None or (now + 4 * d0 < self.next_arrival and first_finish(batch) > 3))
            and sched.is_steady(batch)
        ):
            end, k = run_fast_forward(self, rep, batch, now, d0)
            self.seq += 1  # _push, inlined
            heapq.heappush(self.heap, (end, BATCH_END, self.seq, rep, batch, k))
            return
        self._log_row(rep, batch, now, end)
        self._push(end, BATCH_END, rep, batch, 1)

    def _log_row(self, rep: ReplicaState, batch: Batch, start: float, end: float) -> None:
        s = batch.shape
        rows = self.batches.rows
        rows.extend(  # one row, in BATCH_COLUMNS order
            (
                rep.index, start, end, s.num_prefill + s.num_decode, s.num_prefill, s.prefill_tokens,
                s.prefill_work, s.num_decode, s.decode_kv, rep.scheduler.kv.used, s.prefill_kv,
            )
        )
        if len(rows) >= FLUSH_VALUES:  # pack into numpy: memory per logged row ~88 bytes, not ~350
            self.batches.flush()
            self.itl.flush()

    def _start_pipelined(self, rep: ReplicaState, batch: Batch, now: float) -> None:
        est, shape = rep.estimator, batch.shape
        for r in batch.decodes:
            r.in_flight = True
        for r in batch.prefills:
            r.in_flight = True
        lt = est.layer_time(shape)
        xfer = est.pp_transfer_time(shape.num_tokens)
        pp, free = rep.pp, rep.stage_free
        t = now
        end0 = 0.0
        for s in range(pp):
            st = rep.stage_layers[s] * lt
            if s == 0:
                st += est.embed_time(shape.num_tokens) + est.cpu_overhead(shape.num_seqs)
                start = now
            else:
                start = max(t + xfer, free[s])
            if s == pp - 1:
                st += est.head_time(shape.num_seqs)
            t = start + st
            free[s] = t
            if s == 0:
                end0 = t
            self.batches.spans.append((rep.index, s, start, t, self.batches.single_rows()))
        rep.busy = True
        self._log_row(rep, batch, now, t)
        self._push(end0, STAGE0_FREE, rep, None, 0)
        self._push(t, BATCH_END, rep, batch, 1)

    # -- applying a finished batch --------------------------------------------
    @staticmethod
    def _complete(book: ReplicaBook, req: Request, now: float, done: list | None) -> list:
        """``req`` produced its last token at ``now``: release it, note it in ``done``."""
        req.completion = now
        book.finish(req)
        if done is None:
            done = []
        done.append(req)
        return done

    def _batch_end(self, rep: ReplicaState, batch: Batch, repeats: int, now: float) -> None:
        book = rep.book
        book.num_in_flight -= 1
        start = batch.start
        first_end = batch.end if repeats > 1 else now
        itl = self.itl
        done = None
        pipelined = rep.pp > 1
        group = batch.group
        if group is not None:  # every decoding request, advanced lazily
            finished = group.advance(repeats, start, first_end, now, itl)
            if finished:
                done = finished
                for req in finished:
                    req.completion = now
                    book.finish(req)
        else:
            same = 0
            for req in batch.decodes:
                if pipelined:
                    req.in_flight = False
                req.kv_len += repeats
                if req.last_token != start:
                    if req.last_token == now:  # set by this very loop: decoded twice
                        raise checks.duplicate_decode(req, now)
                    itl.values.append(first_end - req.last_token)
                    itl.counts.append(1)
                    same -= 1
                req.last_token = now
                if req.kv_len >= req.final_kv:
                    done = self._complete(book, req, now, done)
            same += len(batch.decodes)
            if same:
                itl.values.append(first_end - start)
                itl.counts.append(same)
        caching = rep.caching
        for req, q in zip(batch.prefills, batch.chunks):
            if pipelined:
                req.in_flight = False
            req.kv_len += q
            if caching:
                rep.scheduler.kv.computed(req)
            if req.kv_len < req.prefill_target:
                continue
            if req.first_token == INF:
                req.first_token = now
            else:  # first token after a recompute: the gap is an inter-token latency
                itl.values.append(now - req.last_token)
                itl.counts.append(1)
            req.last_token = now
            if req.kv_len >= req.final_kv:
                done = self._complete(book, req, now, done)
            else:
                book.prefill_done(req)
        if done is not None:
            self.completed += len(done)
            if self.summary is not None:
                self.summary.done_until = now
            if self.on_complete is not None:
                self.on_complete(len(done))
            if self.followups is not None:
                self._release(done, now)
            if self.record is not None:
                self.record(done)
        if not pipelined:
            rep.busy = False
        self._try_start(rep, now)
