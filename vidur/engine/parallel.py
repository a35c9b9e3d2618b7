"""Parallel replicas: groups of replicas simulated in separate processes when routing allows it.

A router that sets ``decides_upfront`` (round robin, random) picks each
request's replica from the request and its own state alone. Its choices are
then made up front, in this process, by calling ``route`` on every request in
arrival order: the calls a sequential run makes, in the same order, so the
same answers and the same random draws. The replicas split into ``W``
contiguous groups, one forked process each, and each process runs the
ordinary event loop over its replicas and the requests routed to them.
Replicas share no state, so every replica goes through exactly the events of
a sequential run, and the merged records are the ones a sequential run
writes:

* request columns put back in request-id order;
* batch rows concatenated in group order (each group's rows are sorted by
  (replica, start) and the groups are ascending ranges of replicas, so the
  whole is sorted as one log would be);
* stage spans (sorted by batch row, then stage) with their batch rows offset;
* inter-token latency samples merged again (equal values' counts summed exactly);
* replica facts in replica order; the makespan the latest group's;
* with ``metrics.batch_log: summary``, the groups' per-replica aggregates
  united (:func:`~vidur.metrics.batch_summary.merge_batch_summaries`).

A group's fast-forward is bounded by the group's own next arrival, so it
may skip further ahead than one process would; fast-forward equals stepping
exactly, so the records do not change (``tests/test_parallel.py`` checks
the files byte for byte).

Workers hand their columns back through ``.npy`` files in a temporary
directory, read back one array at a time as it is copied into place: the
parent holds the merged records, not a pickled copy of each group's. Workers show no progress bar: the
parent shows one, fed by a shared counter.

The run stays in one process (:func:`plan` says why) with one replica,
``simulation.workers: 1``, a router that reads replica state (``lor``,
``prefix_aware``, ``session_affinity``, and plugins unless they set
``decides_upfront``), closed-loop sessions (a completion releases the next
turn), where ``fork`` is unavailable, inside a daemonic process (a search or
sweep worker), and, for ``workers: auto``, with one CPU or fewer than
:data:`AUTO_MIN_REQUESTS` requests (process start-up would cost more than it
saves).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from vidur.engine import checks
from vidur.engine.log import merge_samples
from vidur.errors import VidurError
from vidur.metrics.batch_summary import merge_batch_summaries
from vidur.metrics.records import RunRecords
from vidur.scheduler.global_base import GlobalScheduler

if TYPE_CHECKING:
    from vidur.engine.simulation import Simulation

#: ``workers: auto`` runs in one process below this many requests: forking and
#: merging cost a few hundred milliseconds, more than they save on small runs
AUTO_MIN_REQUESTS = 20_000
#: requests made at a time while routing up front (bounds the objects alive at once)
ROUTE_BLOCK = 65_536
#: completions a worker counts before adding them to the shared progress counter
PROGRESS_EVERY = 1024


@attrs.frozen
class Plan:
    """How a run executes: ``workers`` processes (1: sequential) and a line saying so, or why not."""

    workers: int
    note: str


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan(sim: Simulation, executor: str = "process") -> Plan:
    """The number of worker processes for ``sim`` and the reason, from ``simulation.workers``
    (``executor`` ``ray``: tasks on the Ray session of this process, one per CPU of its cluster for auto)."""
    sc = sim.scenario
    asked = sc.simulation.workers
    nrep = len(sim.replica_states)
    router = type(sim.router)
    content = sim.table.content

    def seq(why: str) -> Plan:
        return Plan(1, f"sequential: {why}")

    if asked == 1:
        return seq("simulation.workers is 1")
    if nrep == 1:
        return seq("one replica")
    if not router.decides_upfront or router.needs_live_state:
        return seq(f"global scheduler {sc.global_scheduler.name!r} routes on live replica state")
    if content is not None and content.closed_loop:
        return seq("closed-loop sessions (a completion releases the next turn)")
    on_ray = executor == "ray"
    if on_ray and sim.engine_overrides:
        return seq(f"{', '.join(sim.engine_overrides)} set on this run, which a Ray task's rebuilt simulation would not know")
    if not on_ray and "fork" not in mp.get_all_start_methods():
        return seq("this platform cannot fork worker processes")
    if not on_ray and mp.current_process().daemon:
        return seq("already in a daemonic worker process (search, sweep)")
    if asked == "auto":
        cpus = _ray_cpus() if on_ray else available_cpus()
        if cpus < 2:
            return seq("one CPU (simulation.workers: auto)")
        if len(sim.table) < AUTO_MIN_REQUESTS:
            return seq(
                f"{len(sim.table):,} requests (simulation.workers: auto uses processes from "
                f"{AUTO_MIN_REQUESTS:,}; start-up would cost more than it saves)"
            )
        asked = cpus
    n = min(int(asked), nrep)
    what = "Ray tasks" if on_ray else "worker processes"
    return Plan(n, f"{n} {what}, {nrep} replicas split {_split_text(nrep, n)}")


def _ray_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1


def _edges(nrep: int, n: int) -> list[int]:
    """Replica ranges of ``n`` contiguous groups as sizes as even as possible."""
    return [nrep * g // n for g in range(n + 1)]


def _split_text(nrep: int, n: int) -> str:
    e = _edges(nrep, n)
    return " + ".join(str(e[g + 1] - e[g]) for g in range(n))


class _Assigned(GlobalScheduler):
    """Replays the routing decided up front: the local replica index of each request, in arrival order."""

    name = "assigned"

    def __init__(self, local: list[int]):
        super().__init__(None, [], None)
        self._next = iter(local).__next__

    def route(self, req) -> int:
        return self._next()


def _blamed(sim: Simulation, fn, *args):
    """``fn(*args)``, a policy's exception turned into the one-line error a sequential run gives."""
    try:
        return fn(*args)
    except VidurError:
        raise
    except Exception as exc:
        blame = sim._blame(exc)
        if blame is None:
            raise
        raise blame from exc


def route_upfront(sim: Simulation) -> np.ndarray:
    """The replica of each table row (-1: arrives after ``max_time``, never routed), asking the
    router in arrival order exactly as the event loop would."""
    t = sim.table
    n = len(t)
    mt = sim.scenario.simulation.max_time
    cut = n if mt is None else int(np.searchsorted(t.arrival, mt, side="right"))  # the loop stops after these
    assign = np.full(n, -1, dtype=np.int32)
    route, nrep = sim.router.route, len(sim.replica_states)

    def block(lo: int, hi: int) -> list[int]:
        out = []
        for req in sim.make_requests(np.arange(lo, hi)):
            i = route(req)
            if i.__class__ is not int or not 0 <= i < nrep:
                i = checks.route_index(i, nrep, req)
            out.append(i)
        return out

    for lo in range(0, cut, ROUTE_BLOCK):
        hi = min(cut, lo + ROUTE_BLOCK)
        assign[lo:hi] = _blamed(sim, block, lo, hi)
    return assign


# -- in a worker process ----------------------------------------------------------------
def _spill(obj: Any, folder: Path | None, tag: str) -> Any:
    """Arrays in ``obj`` (a dict of arrays, or an array) saved under ``folder``, replaced by their
    paths (no ``folder``: ``obj`` itself)."""
    if folder is None:
        return obj
    if isinstance(obj, np.ndarray):
        path = folder / f"{tag}.npy"
        np.save(path, obj, allow_pickle=False)
        return ("npy", str(path))
    if isinstance(obj, dict):
        return {k: _spill(v, folder, f"{tag}.{k}") for k, v in obj.items()}
    return obj


def _simulate_group(sim: Simulation, lo: int, hi: int, rows: np.ndarray, local: list[int], *,
                    step_mode: bool, counter, folder: Path | None) -> dict:
    """Run replicas ``lo..hi-1`` on table ``rows`` (routed to them, ``local`` index each); the records'
    fields, their arrays spilled into ``folder`` when one is given."""
    from vidur.engine.loop import EventLoop

    sc = sim.scenario
    sim.replica_states = states = sim.replica_states[lo:hi]  # this process's copy of the simulation
    source = sim.request_source(rows)
    on_complete = None
    if counter is not None:
        pending = [0]

        def on_complete(k: int) -> None:
            pending[0] += k
            if pending[0] >= PROGRESS_EVERY:
                with counter.get_lock():
                    counter.value += pending[0]
                pending[0] = 0

    loop = EventLoop(
        source,
        states,
        _Assigned(local),
        fast_forward=sc.simulation.fast_forward and not step_mode,
        max_time=sc.simulation.max_time,
        record_spans=sc.metrics.chrome_trace,
        on_complete=on_complete,
        batch_log=sim._batch_log(),
    )
    t0 = time.perf_counter()
    makespan = _blamed(sim, loop.run)
    records = sim._records(loop, makespan, time.perf_counter() - t0)
    del source, loop
    if records.batch_summary is not None:
        records.batch_summary.cost = None  # a closure over the model (not picklable); folding is over
    out = {}
    for f in attrs.fields(RunRecords):
        out[f.name] = _spill(getattr(records, f.name), folder, f.name)
        setattr(records, f.name, None)  # written: let it go before the next one
    return out


def _worker(sim: Simulation, g: int, lo: int, hi: int, rows: np.ndarray, local: list[int], conn, *,
            step_mode: bool, counter, folder: str) -> None:
    """A worker process's body: its group's records (spilled) or its error, sent through ``conn``."""
    try:
        path = Path(folder) / f"group{g}"
        path.mkdir()
        msg = ("ok", _simulate_group(sim, lo, hi, rows, local, step_mode=step_mode, counter=counter, folder=path))
    except BaseException as exc:  # noqa: BLE001 -- everything goes back to the parent
        msg = ("error", exc, traceback.format_exc())
    try:
        conn.send(msg)
    except Exception:  # an exception that does not pickle: its text
        conn.send(("error", None, msg[2] if msg[0] == "error" else traceback.format_exc()))
    conn.close()


def _ray_group(scenario_yaml: str, table, lo: int, hi: int, rows: np.ndarray, local: list[int],
               step_mode: bool) -> dict:
    """A Ray task: the simulation rebuilt from its scenario and request table, then one group's records."""
    import yaml

    from vidur.engine.simulation import Simulation
    from vidur.scenario import scenario_from_dict

    sim = Simulation(scenario_from_dict(yaml.safe_load(scenario_yaml)), requests=table)
    return _simulate_group(sim, lo, hi, rows, local, step_mode=step_mode, counter=None, folder=None)


# -- in the parent ------------------------------------------------------------------------
def _groups(sim: Simulation, workers: int):
    """``(group, first replica, end replica, table rows, local replica of each routed row)`` per group;
    rows never routed (after ``max_time``) go to the last group, which records them as never arrived."""
    nrep = len(sim.replica_states)
    assign = route_upfront(sim)
    edges = _edges(nrep, workers)
    group_of = np.searchsorted(np.asarray(edges[1:]), assign, side="right")
    unrouted = np.flatnonzero(assign < 0)
    for g in range(workers):
        rows = np.flatnonzero((group_of == g) & (assign >= 0))
        local = (assign[rows] - edges[g]).tolist()
        if g == workers - 1 and len(unrouted):
            rows = np.concatenate([rows, unrouted])
        yield g, edges[g], edges[g + 1], rows, local
        del rows, local


def run_parallel(sim: Simulation, workers: int, *, step_mode: bool = False, show: bool = False,
                 executor: str = "process") -> RunRecords:
    """Route up front, simulate ``workers`` groups of replicas in forked processes (``executor``
    ``process``) or as tasks on this process's Ray session (``ray``), merge their records."""
    t0 = time.perf_counter()
    if executor == "ray":
        records = _run_ray(sim, workers, step_mode=step_mode)
    else:
        records = _run_forked(sim, workers, step_mode=step_mode, show=show)
    records.wall_seconds = time.perf_counter() - t0
    return records


def _run_forked(sim: Simulation, workers: int, *, step_mode: bool, show: bool) -> RunRecords:
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0) if show else None
    procs, conns, edges = [], {}, _edges(len(sim.replica_states), workers)
    with tempfile.TemporaryDirectory(prefix="vidur-workers-") as folder:
        try:
            for g, lo, hi, rows, local in _groups(sim, workers):
                recv, send = ctx.Pipe(duplex=False)
                p = ctx.Process(
                    target=_worker,
                    args=(sim, g, lo, hi, rows, local, send),
                    kwargs={"step_mode": step_mode, "counter": counter, "folder": folder},
                    name=f"vidur-replicas-{lo}-{hi - 1}",
                    daemon=True,
                )
                p.start()
                send.close()
                procs.append(p)
                conns[recv] = g
                del rows, local
            results = _collect(conns, procs, edges, counter, len(sim.table) if show else None)
            return _merge(results, len(sim.table), sim)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()


def _run_ray(sim: Simulation, workers: int, *, step_mode: bool) -> RunRecords:
    """The same groups as Ray tasks (``ray.init`` first: ``vidur run --executor ray`` does). Each task
    rebuilds the simulation from the scenario and the request table: the workers need the same
    plugins installed (plugins registered only in this process are not seen there)."""
    import ray

    if not ray.is_initialized():
        raise VidurError("the ray executor needs a Ray session: call ray.init() first (vidur run --executor ray does)")
    remote = ray.remote(num_cpus=1, max_retries=0)(_ray_group)
    scenario_yaml = sim.scenario.to_yaml()
    table = ray.put(sim.table)
    refs = [remote.remote(scenario_yaml, table, lo, hi, rows, local, step_mode)
            for _, lo, hi, rows, local in _groups(sim, workers)]
    try:
        results = ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        for r in refs:  # the other groups' work is no longer wanted
            ray.cancel(r, force=True)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, VidurError):
            raise cause from None
        raise
    return _merge(results, len(sim.table), sim)


def _collect(conns: dict, procs: list, edges: list[int], counter, total: int | None) -> list[dict]:
    """Each group's spilled records, in group order; the first error raised as the run's."""
    bar = None
    if total is not None:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="req", delay=2.0, leave=False, mininterval=0.5)
    results: list[dict | None] = [None] * len(procs)
    try:
        while conns:
            for conn in wait(list(conns), timeout=0.5):
                g = conns.pop(conn)
                try:
                    msg = conn.recv()
                except EOFError:
                    procs[g].join()
                    raise VidurError(
                        f"the worker process for replicas {edges[g]}..{edges[g + 1] - 1} died "
                        f"(exit code {procs[g].exitcode}); out of memory? try simulation.workers: 1"
                    ) from None
                finally:
                    conn.close()
                if msg[0] == "error":
                    _, exc, text = msg
                    if isinstance(exc, BaseException):
                        raise exc
                    raise RuntimeError(f"worker process for replicas {edges[g]}..{edges[g + 1] - 1} failed:\n{text}")
                results[g] = msg[1]
            if bar is not None:
                bar.update(counter.value - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return results


def _merge(parts: list[dict], n: int, sim: Simulation) -> RunRecords:
    """One run's records from the groups' spilled ones (in group order). Each array is read
    from its file when it is copied into place and let go at once: the peak is the merged
    records plus one group's column."""

    req = {}
    ids = [_read(p["requests"]["request_id"]) for p in parts]  # each group's rows, by request id
    for name in parts[0]["requests"]:
        col = None
        for p, rid in zip(parts, ids):
            vals = _read(p["requests"][name])
            if col is None:
                col = np.empty(n, dtype=vals.dtype)
            col[rid] = vals
            del vals
        req[name] = col
    del ids
    summary = None
    if parts[0]["batch_summary"] is not None:  # metrics.batch_log: summary: the aggregates, united by replica
        summary = merge_batch_summaries([p["batch_summary"] for p in parts])
        summary.cost = sim._batch_log().summary.cost  # dropped to cross processes; says FLOPs/bytes were priced
    rows = [0 if summary is not None else _rows(p["batches"]) for p in parts]
    batches = parts[0]["batches"] if summary is not None else {}  # BatchRowsNotKept in summary mode
    for name in (parts[0]["batches"] if summary is None else ()):
        col = None
        at = 0
        for p, k in zip(parts, rows):
            vals = _read(p["batches"][name])
            if col is None:
                col = np.empty(sum(rows), dtype=vals.dtype)
            col[at:at + k] = vals
            at += k
            del vals
        batches[name] = col
    spans, offset, pieces = None, 0, []
    for p, k in zip(parts, rows):  # a group's spans name its rows: offset by the rows of the groups before it
        sp = p["stage_spans"]
        if sp:
            sp = {key: _read(v) for key, v in sp.items()}
            pieces.append({**sp, "batch": sp["batch"] + offset})
        offset += k
    if pieces:
        spans = {key: np.concatenate([sp[key] for sp in pieces]) for key in pieces[0]}
    v = np.concatenate([_read(p["itl_values"]) for p in parts])
    c = np.concatenate([_read(p["itl_counts"]) for p in parts])
    if len(v):
        v, c = merge_samples(v, c)
    return RunRecords(
        requests=req,
        batches=batches,
        itl_values=v,
        itl_counts=c,
        replicas=[info for p in parts for info in p["replicas"]],
        makespan=max((p["makespan"] for p in parts), default=0.0),
        stage_spans=spans,
        batch_summary=summary,
    )


def _read(obj: Any) -> np.ndarray:
    """A spilled array read back (whole, not memory-mapped: mapped pages would stay resident)."""
    if isinstance(obj, tuple) and obj[0] == "npy":
        return np.load(obj[1], allow_pickle=False)
    return np.asarray(obj)


def _rows(batches: dict) -> int:
    """Rows of a group's spilled batch columns (from the .npy header, without reading the data)."""
    a = batches["start"]
    if isinstance(a, tuple) and a[0] == "npy":
        return int(np.load(a[1], mmap_mode="r").shape[0])
    return len(a)


__all__ = ["AUTO_MIN_REQUESTS", "Plan", "available_cpus", "plan", "route_upfront", "run_parallel"]
