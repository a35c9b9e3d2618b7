"""Where configuration searches run: in-process, a local process pool, or Ray.

Every executor runs the same work function (by default
:func:`vidur.search.worker.search_config`, guarded; ``vidur sweep`` passes
its own) on the same task dicts, so results are identical whichever runs
them; only the order in which they finish differs (the caller sorts).
``on_result`` is called in the calling process as each task finishes. A work
function is a module-level ``fn(task, host=None) -> row`` (picklable) that
turns its own failures into rows.

Process-pool and Ray workers build their own plugin host (built-ins plus
installed entry points); plugins registered only in the calling process
(``PluginHost.register``) are seen by the ``serial`` executor alone:
:func:`check_plugins_reach_workers` refuses, in one line, a search or sweep that would
send work using one to other processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from vidur.errors import VidurError

EXECUTORS = ("process", "serial", "ray")

OnResult = Callable[[dict[str, Any]], None]
Work = Callable[..., dict[str, Any]]


def default_jobs() -> int:
    """Cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _guarded(task: dict[str, Any], host=None) -> dict[str, Any]:
    """Run one task; an unexpected exception becomes a ``status: error`` row
    (not stored, so a rerun retries it) instead of stopping the search."""
    from vidur.search.worker import search_config

    try:
        return search_config(task, host)
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
        return {"key": task["key"], "index": task["index"], "label": task["label"], "status": "error",
                "reason": f"{type(exc).__name__}: {exc}{where}", "max_qps": 0.0, "probes": []}


def _init_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool


def run_serial(tasks: Iterable[dict], on_result: OnResult, host=None, work: Work | None = None) -> None:
    """Run every task in this process, in order."""
    work = work or _guarded
    for t in tasks:
        on_result(work(t, host))


def run_process_pool(tasks: list[dict], on_result: OnResult, jobs: int, work: Work | None = None) -> None:
    """A pool of ``jobs`` fresh (spawned) worker processes, one task at a time each."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pool = ctx.Pool(processes=min(jobs, len(tasks)), initializer=_init_worker)
    try:
        for row in pool.imap_unordered(work or _guarded, tasks, chunksize=1):
            on_result(row)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def check_ray_address(address: str | None) -> None:
    """Fail fast, in one line, when ``address`` (host:port or ray://host:port) does not answer."""
    if address in (None, "", "auto", "local"):
        return
    a = address.removeprefix("ray://")
    host, _, port = a.rpartition(":")
    if not host or not port.isdigit():
        raise VidurError(f"--address {address!r} must be HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
    except OSError as exc:
        raise VidurError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}; "
            "start one with `ray start --head` or fix --address"
        ) from None


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to a temporary file: Ray's C++ core logs retries there (one line a second
    while it cannot join a cluster), under the one-line error that follows."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def start_ray(address: str | None, jobs: int | None) -> bool:
    """Join the cluster at ``address`` or start a local Ray (``jobs`` CPUs) unless a session exists;
    True when this call started it (then the caller shuts it down). Failures are one line."""
    try:
        import ray
    except ImportError:
        raise VidurError("--executor ray needs Ray: pip install 'vidur-sim[ray]'") from None
    if ray.is_initialized():
        return False
    check_ray_address(address)
    kwargs: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False, "logging_level": "ERROR"}
    if address:
        kwargs["address"] = address
    elif jobs:
        kwargs["num_cpus"] = jobs
    try:
        with _quiet_stderr():
            ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VidurError(f"cannot start or join Ray{f' at {address}' if address else ''}: {msg}") from None
    return True


def run_ray(tasks: list[dict], on_result: OnResult, address: str | None, jobs: int | None,
            work: Work | None = None) -> None:
    """Run on Ray: an existing ``ray.init`` session, the cluster at ``address``,
    or a local instance started here (and shut down afterwards)."""
    import ray

    started = start_ray(address, jobs)
    remote = ray.remote(num_cpus=1, max_retries=0)(work or _guarded)
    refs = [remote.remote(t) for t in tasks]
    try:
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            on_result(ray.get(done[0]))
    except BaseException:
        for r in refs:
            with contextlib.suppress(Exception):
                ray.cancel(r, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def leaves_process(executor: str, jobs: int | None, n_tasks: int) -> bool:
    """Whether :func:`run_tasks` would run these tasks outside this process."""
    if executor == "ray":
        return n_tasks > 0
    return executor == "process" and n_tasks > 1 and (jobs or default_jobs()) > 1


def in_process_plugins(scenarios: Iterable[dict], host) -> list[str]:
    """``kind name`` of every plugin the raw ``scenarios`` name that is registered in this
    process only (``PluginHost.register``), so a worker process would not have it; the
    estimators a wrapping estimator wraps (its ``inner``, down the chain) included."""
    from vidur.estimate.wrap import WrappingEstimator

    found: dict[str, None] = {}

    def check(kind: str, name) -> None:
        if not isinstance(name, str):
            return
        try:
            entry = host.entry(kind, name)
        except VidurError:  # not a registered name (e.g. estimator auto): nothing to carry
            return
        if entry.distribution == "registered in-process":  # PluginHost's label for them
            found[f"{kind.replace('workload.', '').replace('_', ' ')} {name!r}"] = None

    def name_of(section):
        return section.get("name") if isinstance(section, dict) else section

    def check_estimator(section) -> None:
        """The named estimator and, for a wrapper, its ``inner`` (the scenario's, else its
        Config's default), as the resolver (:mod:`vidur.resolve.estimator`) resolves them."""
        name, inner, seen = name_of(section), section.get("inner") if isinstance(section, dict) else None, set()
        while isinstance(name, str) and name not in seen:
            seen.add(name)
            check("runtime_estimator", name)
            try:
                cls = host.get("runtime_estimator", name)
            except VidurError:
                return
            if not (isinstance(cls, type) and issubclass(cls, WrappingEstimator)):
                return
            name, inner = inner if inner is not None else getattr(cls.Config(), "inner", None), None

    for sc in scenarios:
        for kind in ("replica_scheduler", "global_scheduler", "memory_planner"):
            check(kind, name_of(sc.get(kind)))
        check_estimator(sc.get("runtime_estimator"))
        wl = sc.get("workload") or {}
        check("workload.arrival", name_of(wl.get("arrival")))
        check("workload.lengths", name_of(wl.get("lengths")))
        check("model", sc.get("model"))
        check("device", (sc.get("cluster") or {}).get("device"))
    return list(found)


def check_plugins_reach_workers(scenarios: list[dict], executor: str, jobs: int | None, host=None) -> None:
    """Refuse, in one line, to send work that needs an in-process plugin to worker processes or Ray."""
    if not leaves_process(executor, jobs, len(scenarios)):
        return
    from vidur.plugins import get_host

    missing = in_process_plugins(scenarios, host or get_host())
    if missing:
        raise VidurError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} registered in this process only and would "
            f"not exist in {executor} workers; use executor 'serial' (or one job), or install the plugin as an "
            "entry point"
        )


def run_tasks(tasks: list[dict], on_result: OnResult, *, executor: str = "process", jobs: int | None = None,
              address: str | None = None, host=None, work: Work | None = None) -> None:
    """Dispatch ``tasks`` to ``executor`` (process, serial or ray); ``work`` (default: one
    configuration's max-QPS search) is called once per task."""
    if executor not in EXECUTORS:
        raise VidurError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    if address and executor != "ray":
        raise VidurError("--address needs --executor ray")
    if executor == "ray":
        run_ray(tasks, on_result, address, jobs, work)
        return
    if not tasks:
        return
    jobs = jobs or default_jobs()
    if executor == "serial" or jobs == 1 or len(tasks) == 1:
        run_serial(tasks, on_result, host, work)
    else:
        run_process_pool(tasks, on_result, jobs, work)
