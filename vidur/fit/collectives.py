"""Calibrating the collective model on measured NCCL times.

Reads Vidur-format network profiles (``<node>/all_reduce.csv``,
``<node>/send_recv.csv``; times in ms, ``size`` in **bytes**: see
:func:`size_unit_check`) and fits, per node type, collective, world size
and GPUs per node, the two parameters of the ring model in
:mod:`vidur.hardware.collective`:

- all-reduce: ``t = 2(p−1)·latency + 2(p−1)/p · bytes / bandwidth``
- send/recv: ``t = latency + bytes / bandwidth``

by least squares on the *relative* error (every size counts alike). It
also keeps a monotone log-log interpolation table of the measurements
(:class:`vidur.fit.curves.Curve`), which the profile estimator prefers
where a node was measured, since NCCL switches protocols with message size
and two parameters cannot follow that exactly. :func:`fit_network` reports
both errors.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.hardware.collective import LinkParams
from vidur.fit.curves import Curve

COLLECTIVES = ("all_reduce", "send_recv")


@attrs.frozen
class CollectiveFit:
    """Fit of one (node, collective, world size, GPUs per node) sweep.

    ``params`` are the fitted ring-model parameters, ``mape``/``max_ape``
    their error over the sweep (%), ``table_mape`` the error of the
    interpolation table on held-out sizes (every 5th point left out).
    """

    node: str
    collective: str
    world: int
    devices_per_node: int
    params: LinkParams
    mape: float
    max_ape: float
    table_mape: float
    num_points: int
    min_bytes: int
    max_bytes: int
    curve: Curve = attrs.field(eq=False, repr=False)

    def model_time(self, nbytes) -> np.ndarray:
        """Ring-model seconds for ``nbytes`` (array)."""
        return model_time(self.collective, self.world, np.asarray(nbytes, dtype=float), self.params)

    def table_time(self, nbytes: float) -> float:
        """Seconds from the interpolation table (flat below, proportional above the measured range)."""
        return self.curve(max(float(nbytes), 1.0))


def model_time(collective: str, world: int, nbytes: np.ndarray, p: LinkParams) -> np.ndarray:
    a, b = _features(collective, world, nbytes)
    return a * p.latency + b / p.bandwidth


def _features(collective: str, world: int, nbytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if collective == "all_reduce":
        steps = world - 1
        return np.full_like(nbytes, 2.0 * steps), 2.0 * steps / world * nbytes
    if collective == "send_recv":
        return np.ones_like(nbytes), nbytes
    raise VidurError(f"unknown collective {collective!r}; valid: {', '.join(COLLECTIVES)}")


def fit_params(collective: str, world: int, nbytes: np.ndarray, seconds: np.ndarray) -> LinkParams:
    """Least-squares (latency, bandwidth) minimising the relative error, both kept positive."""
    a, b = _features(collective, world, np.asarray(nbytes, dtype=float))
    t = np.asarray(seconds, dtype=float)
    A = np.column_stack([a / t, b / t])
    y = np.ones_like(t)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    lat, inv_bw = coef
    if inv_bw <= 0:
        inv_bw = float(np.median(t / b))  # degenerate: pure bandwidth
        lat = 0.0
    if lat <= 0:
        lat = 0.0
        inv_bw = float(np.sum(b / t) / np.sum((b / t) ** 2))
    return LinkParams(bandwidth=1.0 / inv_bw, latency=max(lat, 1e-9))


def read_collective_csv(path: str | Path) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """``{(world, devices_per_node): (bytes, seconds)}`` from a Vidur-format collective CSV (median times)."""
    p = Path(path)
    try:
        fh = open(p, newline="", encoding="utf-8")
    except OSError as exc:
        raise VidurError(f"cannot read {p}: {exc.strerror or exc}") from None
    with fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        tcol = next((f for f in fields if f.startswith("time_stats.") and f.endswith(".median")), None)
        need = {"num_workers", "size", "devices_per_node"}
        if tcol is None or not need <= set(fields):
            raise VidurError(f"{p} is not a Vidur collective profile (needs time_stats.*.median, {', '.join(sorted(need))})")
        groups: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for lineno, r in enumerate(reader, start=2):
            try:
                key = (int(r["num_workers"]), int(r["devices_per_node"]))
                size, ms = float(r["size"]), float(r[tcol])
            except (TypeError, ValueError):
                raise VidurError(f"{p} is corrupt at line {lineno}") from None
            if size > 0 and ms > 0:
                groups.setdefault(key, []).append((size, ms * 1e-3))
    out = {}
    for k, v in groups.items():
        arr = np.array(sorted(v))
        out[k] = (arr[:, 0], arr[:, 1])
    return out


def _fit_one(node: str, collective: str, world: int, dpn: int, nbytes: np.ndarray, secs: np.ndarray) -> CollectiveFit:
    params = fit_params(collective, world, nbytes, secs)
    pred = model_time(collective, world, nbytes, params)
    ape = np.abs(pred - secs) / secs * 100
    test = np.zeros(len(nbytes), dtype=bool)
    test[2:-1:5] = True
    tab = Curve.fit(nbytes[~test], secs[~test])
    tape = np.abs(tab.eval_array(nbytes[test]) - secs[test]) / secs[test] * 100 if test.any() else np.zeros(1)
    return CollectiveFit(
        node=node,
        collective=collective,
        world=world,
        devices_per_node=dpn,
        params=params,
        mape=float(ape.mean()),
        max_ape=float(ape.max()),
        table_mape=float(tape.mean()),
        num_points=len(nbytes),
        min_bytes=int(nbytes.min()),
        max_bytes=int(nbytes.max()),
        curve=Curve.fit(nbytes, secs),
    )


def fit_network(node_dir: str | Path, node_name: str | None = None) -> list[CollectiveFit]:
    """Fit every sweep in one node's directory (``all_reduce.csv`` and/or ``send_recv.csv``)."""
    d = Path(node_dir)
    name = node_name or d.name
    fits: list[CollectiveFit] = []
    found = False
    for coll in COLLECTIVES:
        f = d / f"{coll}.csv"
        if not f.is_file():
            continue
        found = True
        for (world, dpn), (nb, s) in sorted(read_collective_csv(f).items()):
            if len(nb) >= 2:
                fits.append(_fit_one(name, coll, world, dpn, nb, s))
    if not found:
        raise VidurError(f"{d} holds neither all_reduce.csv nor send_recv.csv")
    return fits


def fit_all(network_root: str | Path) -> dict[str, list[CollectiveFit]]:
    """Fit every node directory under ``network_root`` (``vidur-profiles/network``)."""
    root = Path(network_root)
    if not root.is_dir():
        raise VidurError(f"network profile directory {root} does not exist")
    return {d.name: fit_network(d) for d in sorted(root.iterdir()) if d.is_dir()}


def size_unit_check(fits: list[CollectiveFit]) -> list[dict]:
    """Implied bus bandwidth at the largest message if ``size`` is bytes vs fp16 elements.

    NCCL's bus bandwidth (all-reduce: 2(p−1)/p · bytes / t; send/recv:
    bytes / t) cannot exceed the per-GPU unidirectional link bandwidth
    (NVLink3 300 GB/s, NVLink4 450 GB/s), which decides the unit.
    """
    out = []
    for f in fits:
        t = f.table_time(f.max_bytes)
        factor = 2.0 * (f.world - 1) / f.world if f.collective == "all_reduce" else 1.0
        busbw = factor * f.max_bytes / t
        out.append(
            {
                "node": f.node,
                "collective": f.collective,
                "world": f.world,
                "devices_per_node": f.devices_per_node,
                "busbw_if_bytes_GBps": busbw / 1e9,
                "busbw_if_fp16_elements_GBps": 2 * busbw / 1e9,
            }
        )
    return out


def lookup(fits: list[CollectiveFit], collective: str, world: int, devices_per_node: int | None = None) -> CollectiveFit | None:
    """The fit for ``collective`` over ``world`` ranks (all on one node unless ``devices_per_node`` says)."""
    dpn = world if devices_per_node is None else devices_per_node
    for f in fits:
        if f.collective == collective and f.world == world and f.devices_per_node == dpn:
            return f
    return None


def format_report(all_fits: dict[str, list[CollectiveFit]]) -> str:
    """A plain-text table of fitted parameters and errors."""
    lines = [
        f"{'node':22s} {'collective':10s} {'p':>3s} {'dpn':>3s} {'bw GB/s':>8s} {'lat us':>7s} "
        f"{'MAPE%':>6s} {'max%':>6s} {'table%':>6s}"
    ]
    for node, fits in all_fits.items():
        for f in fits:
            lines.append(
                f"{node:22s} {f.collective:10s} {f.world:3d} {f.devices_per_node:3d} "
                f"{f.params.bandwidth / 1e9:8.1f} {f.params.latency * 1e6:7.2f} "
                f"{f.mape:6.1f} {f.max_ape:6.1f} {f.table_mape:6.1f}"
            )
    return "\n".join(lines)


def node_summary(fits: list[CollectiveFit]) -> dict[str, float]:
    """Point-weighted mean MAPE of the ring model and of the table over a node's sweeps."""
    n = sum(f.num_points for f in fits)
    return {
        "model_mape": sum(f.mape * f.num_points for f in fits) / n,
        "table_mape": sum(f.table_mape * f.num_points for f in fits) / n,
    }


# --- shipped calibration ----------------------------------------------------------

CALIBRATION_FILE = Path(__file__).with_name("network_calibration.json")

#: node types without measurements that share a measured fabric
EXTRA_ALIASES = {"dgx_h200": "h100_dgx"}


def _downsample(curve: Curve, min_bytes: int, max_bytes: int, knots: int = 64) -> Curve:
    sizes = np.unique(np.geomspace(min_bytes, max_bytes, knots).round())
    return Curve(np.log(sizes), np.log(curve.eval_array(sizes)), curve.hi_slope)


def fits_to_json(fits: list[CollectiveFit], knots: int = 64) -> list[dict]:
    """JSON-able fits (tables downsampled to ``knots`` log-spaced sizes)."""
    return [
        {
            "collective": f.collective,
            "world": f.world,
            "devices_per_node": f.devices_per_node,
            "bandwidth": f.params.bandwidth,
            "latency": f.params.latency,
            "mape": round(f.mape, 3),
            "max_ape": round(f.max_ape, 3),
            "table_mape": round(f.table_mape, 3),
            "num_points": f.num_points,
            "min_bytes": f.min_bytes,
            "max_bytes": f.max_bytes,
            "table": _downsample(f.curve, f.min_bytes, f.max_bytes, knots).to_json(),
        }
        for f in fits
    ]


def fits_from_json(items: list[dict], node: str) -> dict[tuple[str, int, int], CollectiveFit]:
    """``{(collective, world, devices_per_node): fit}`` from :func:`fits_to_json` output."""
    out = {}
    for d in items:
        f = CollectiveFit(
            node=node,
            collective=d["collective"],
            world=int(d["world"]),
            devices_per_node=int(d["devices_per_node"]),
            params=LinkParams(float(d["bandwidth"]), float(d["latency"])),
            mape=float(d.get("mape", 0.0)),
            max_ape=float(d.get("max_ape", 0.0)),
            table_mape=float(d.get("table_mape", 0.0)),
            num_points=int(d.get("num_points", 0)),
            min_bytes=int(d.get("min_bytes", 1)),
            max_bytes=int(d.get("max_bytes", 1)),
            curve=Curve.from_json(d["table"]),
        )
        out[(f.collective, f.world, f.devices_per_node)] = f
    return out


def write_calibration(network_root: str | Path, path: str | Path = CALIBRATION_FILE) -> dict:
    """Fit every node under ``network_root`` and write the calibration file shipped with vidur."""
    from vidur.hardware.catalog import NETWORK_PROFILES

    all_fits = fit_all(network_root)
    aliases = {**NETWORK_PROFILES, **EXTRA_ALIASES}
    data = {
        "source": "NCCL measurements of the original Vidur (vidur-profiles/network); size in bytes; "
        "regenerate with benchmarks/bench_comm_fit.py --write",
        "aliases": aliases,
        "nodes": {node: fits_to_json(fits) for node, fits in all_fits.items()},
    }
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    calibration.cache_clear()
    return data


@functools.lru_cache(maxsize=None)
def calibration(node_name: str) -> dict[tuple[str, int, int], CollectiveFit]:
    """Shipped fits for a node type (by node name or measured-directory name); empty when unmeasured."""
    try:
        data = json.loads(CALIBRATION_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    nodes = data.get("nodes", {})
    key = node_name if node_name in nodes else data.get("aliases", {}).get(node_name)
    if key not in nodes:
        return {}
    return fits_from_json(nodes[key], key)


def calibrated_params(node_name: str, collective: str, world: int, devices_per_node: int | None = None) -> LinkParams | None:
    """Fitted ring-model (bandwidth, latency) for a node type, or None when it was not measured."""
    f = calibration(node_name).get((collective, world, world if devices_per_node is None else devices_per_node))
    return None if f is None else f.params


def default_network_root() -> Path | None:
    """``../shared/data/vidur-profiles/network`` beside the checkout, when present."""
    here = Path(__file__).resolve()
    for base in here.parents:
        cand = base / "shared" / "data" / "vidur-profiles" / "network"
        if cand.is_dir():
            return cand
    return None


def _isfinite(x: float) -> bool:
    return math.isfinite(x)
