"""Measure collectives for real when a machine has two or more GPUs.

One process per GPU (``torch.multiprocessing``), NCCL, fp16 buffers of
``size`` **bytes**; each point is warmed up, then timed with CUDA events
over back-to-back calls (median of repeats, rank 0's view after a barrier).
Results are written in the Vidur network format (``all_reduce.csv``,
``send_recv.csv``, so :mod:`vidur.fit.collectives` reads them) and fitted
into the profile's ``network.json``, which the ``profile`` estimator prefers
over the shipped calibration. On CPU the same code runs over gloo (tests).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import statistics
import time
from pathlib import Path

from vidur.errors import VidurError

DEFAULT_SIZES = tuple(int(x) for x in (2**k for k in range(11, 28)))  # 2 KiB .. 128 MiB
STATS = ("min", "max", "mean", "median", "std")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, sizes: list[int], backend: str, repeats: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cuda = backend == "nccl"
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    rows = []
    collectives = ["all_reduce"] + (["send_recv"] if world == 2 else [])
    for coll in collectives:
        for size in sizes:
            buf = torch.ones(max(1, size // 2), dtype=torch.float16 if cuda else torch.float32, device=dev)

            def call():
                if coll == "all_reduce":
                    dist.all_reduce(buf)
                elif rank == 0:
                    dist.send(buf, 1)
                else:
                    dist.recv(buf, 0)

            for _ in range(3):
                call()
            samples = []
            for _ in range(repeats):
                dist.barrier()
                if cuda:
                    torch.cuda.synchronize(dev)
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    call()
                    e.record()
                    e.synchronize()
                    samples.append(s.elapsed_time(e))
                else:
                    t0 = time.perf_counter()
                    call()
                    samples.append((time.perf_counter() - t0) * 1e3)
            if rank == 0:
                rows.append((coll, size, samples))
    if rank == 0:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh)
    dist.barrier()
    dist.destroy_process_group()


def write_vidur_csv(path: Path, coll: str, rows: list[tuple[int, int, list[float]]], max_devices: int) -> None:
    """Rows ``(world, size_bytes, samples_ms)`` as a Vidur-format collective CSV."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([""] + [f"time_stats.{coll}.{s}" for s in STATS] + [
            "rank", "num_workers", "size", "collective", "devices_per_node", "max_devices_per_node"])
        for i, (world, size, xs) in enumerate(rows):
            st = (min(xs), max(xs), statistics.fmean(xs), statistics.median(xs), statistics.pstdev(xs))
            w.writerow([i, *st, 0, world, size, coll, world, max_devices])


def profile_collectives(
    out_dir: str | Path,
    *,
    backend: str = "nccl",
    worlds: list[int] | None = None,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    repeats: int = 10,
) -> Path:
    """Measure all-reduce (and send/recv between 2 ranks) on this machine; write CSVs and ``network.json``."""
    import torch
    import torch.multiprocessing as mp

    if backend == "nccl":
        n = torch.cuda.device_count()
        if n < 2:
            raise VidurError(f"measuring collectives needs at least 2 GPUs; this machine has {n}")
    else:
        n = max(worlds or [2])
    worlds = [w for w in (worlds or [2, 4, 8]) if 2 <= w <= n]
    out = Path(out_dir)
    net = out / "network"
    net.mkdir(parents=True, exist_ok=True)
    by_coll: dict[str, list] = {"all_reduce": [], "send_recv": []}
    for world in worlds:
        tmp = net / f".raw-{world}.json"
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        mp.spawn(_worker, args=(world, _free_port(), list(sizes), backend, repeats, str(tmp)), nprocs=world, join=True)
        for coll, size, samples in json.loads(tmp.read_text()):
            by_coll[coll].append((world, size, samples))
        tmp.unlink()
    for coll, rows in by_coll.items():
        if rows:
            write_vidur_csv(net / f"{coll}.csv", coll, rows, n)
    from vidur.fit.collectives import fit_network, fits_to_json

    fits = fit_network(net, node_name="measured")
    (out / "network.json").write_text(json.dumps(fits_to_json(fits), indent=1) + "\n", encoding="utf-8")
    return out / "network.json"
