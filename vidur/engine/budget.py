"""Bounds on work: refuse a workload or cluster that cannot fit in memory before building it, and a
command that would start more simulations than :data:`MAX_SIMULATIONS`.

A run keeps a row per request in several tables (the request table, the
per-request columns, the batch log, the CSV and summary writers; request
objects only while their requests are live), so its peak memory grows
linearly with the number of requests: :data:`BYTES_PER_REQUEST` is the
measured peak of ``vidur run`` divided by its requests, with every batch
row kept (``/usr/bin/time -f %M vidur run scenarios/quickstart.yaml -s
workload.num_requests 200000 -s metrics.batch_log full``: 1.59 GB, ~7.9 kB
each, on 2026-12-04 once finished requests left only columns; 1.7 GB
before, 2.1 GB earlier; the default summarised batch log peaks at 0.45 GB,
~2.3 kB each, so the bound is generous there). A workload
whose estimate exceeds the memory available now is refused in one line that
gives the number, instead of growing until the machine swaps.
"""

from __future__ import annotations

import os

from vidur.errors import VidurError

#: peak bytes of a run per simulated request (measured, see the module docstring)
BYTES_PER_REQUEST = 8_000

#: bytes a replica holds however few requests it serves (its scheduler, KV block manager, state and
#: summary): ``/usr/bin/time -f %M vidur run scenarios/quickstart.yaml -s workload.num_requests 100
#: -s cluster.num_replicas R``: 93 MB at 1 replica, 341 MB at 20,000, 1.30 GB at 100,000 (2026-12-05),
#: ~12.1-12.4 kB a replica
BYTES_PER_REPLICA = 12_500

#: simulations one command starts (``vidur run --seeds``, ``vidur sweep``'s cells); beyond it the call
#: is refused in one line rather than started: at bench_sweep's 214 simulations a minute of 5,000
#: requests each on 2 cores (benchmarks/README.md) 10,000 take about 47 minutes
MAX_SIMULATIONS = 10_000


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def expected_requests(num_requests: int | None, duration: float | None, mean_qps: float | None) -> float | None:
    """How many requests a workload will have: ``num_requests``, or ``duration x mean_qps`` (None if unknown)."""
    if num_requests is not None:
        return float(num_requests)
    if duration is not None and mean_qps:
        return float(duration) * float(mean_qps)
    return None


def check_workload_fits(num_requests: int | None, duration: float | None, mean_qps: float | None) -> None:
    """Refuse (one line, the numbers in it) a workload whose runs would not fit in the memory available."""
    n = expected_requests(num_requests, duration, mean_qps)
    avail = available_memory()
    if n is None or avail is None:
        return
    need = n * BYTES_PER_REQUEST
    if need <= avail:
        return
    what = (
        f"workload.num_requests: {num_requests:,}" if num_requests is not None
        else f"workload.duration: {duration:g} s at {mean_qps:g} QPS (about {n:,.0f} requests)"
    )
    fits = int(avail // BYTES_PER_REQUEST)
    raise VidurError(
        f"{what} needs about {_size(need)} of memory (~{BYTES_PER_REQUEST // 1000} kB per request) but "
        f"{_size(avail)} is available; simulate at most about {fits:,} requests"
    )


def check_replicas_fit(num_replicas: int) -> None:
    """Refuse (one line) more replicas than the memory available holds, before any is built."""
    avail = available_memory()
    need = num_replicas * BYTES_PER_REPLICA
    if avail is None or need <= avail:
        return
    raise VidurError(
        f"cluster.num_replicas: {num_replicas:,} needs about {_size(need)} of memory (~{BYTES_PER_REPLICA / 1000:g} kB "
        f"per replica) but {_size(avail)} is available; simulate at most about {int(avail // BYTES_PER_REPLICA):,} replicas"
    )


def check_simulations(count: int, what: str, how_to_split: str) -> None:
    """Refuse (one line: ``what`` asked for, ``how_to_split`` it) a command that would start more
    than :data:`MAX_SIMULATIONS` simulations."""
    if count > MAX_SIMULATIONS:
        raise VidurError(
            f"{what} makes {count:,} simulations, more than the {MAX_SIMULATIONS:,} one command starts; {how_to_split}"
        )


def _size(b: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if b >= scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b / 1e3:,.0f} kB"
