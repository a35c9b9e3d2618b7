"""What a policy sweep runs: policies × workloads × load levels × seeds.

A **policy** is a replica scheduler and a router (global scheduler), each
with options, written ``NAME`` or ``NAME:key=value,key=value`` (values read
as YAML scalars); switching to another scheduler keeps the scenario's
options that it also accepts, as ``vidur run --scheduler`` does. A **cell**
is one policy run on one request stream, which is fixed by (workload, load,
seed): every policy of a sweep is fed the same stream.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import attrs

from vidur.errors import VidurError
from vidur.workload.arrivals import arrival_at_rate

#: bump when a change to the sweep's worker changes what a stored cell holds
SWEEP_VERSION = 1


@attrs.frozen
class Variant:
    """One plugin choice for a role: its ``name``, ``options`` and the ``text`` the user wrote."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    text: str = ""

    @property
    def label(self) -> str:
        return self.text or self.name


def parse_variant(text: str, what: str) -> Variant:
    """``NAME`` or ``NAME:key=value,key=value`` -> :class:`Variant` (values as YAML scalars)."""
    from vidur.config import parse_value

    name, sep, rest = text.strip().partition(":")
    if not name:
        raise VidurError(f"{what} {text!r} has no name; write NAME or NAME:key=value,key=value")
    opts: list[tuple[str, Any]] = []
    if sep:
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise VidurError(f"{what} {text!r}: option {part!r} is not key=value; write NAME:key=value,key=value")
            opts.append((key.strip(), parse_value(value.strip())))
    return Variant(name.strip(), tuple(opts), text.strip())


def split_variants(values: list[str] | None) -> list[str]:
    """Flatten repeated flags; a value without ``:`` may list several names split by commas."""
    out: list[str] = []
    for v in values or []:
        out.extend([v] if ":" in v else [p for p in v.split(",") if p.strip()])
    return out


@attrs.frozen
class Policy:
    """A (replica scheduler, router) pair, named by ``label``."""

    label: str
    replica: Variant
    router: Variant


@attrs.frozen
class WorkloadChoice:
    """A workload section to put in the scenario (None keeps the scenario's), named by ``label``."""

    label: str
    workload: dict | None = None


@attrs.frozen
class Cell:
    """One simulation of the sweep."""

    policy: Policy
    workload: WorkloadChoice
    qps: float | None
    seed: int

    @property
    def stream(self) -> tuple[str, float | None, int]:
        """What fixes the request stream: (workload, load, seed)."""
        return (self.workload.label, self.qps, self.seed)


@attrs.frozen
class SweepSpec:
    """A scenario (raw mapping, paths resolved) and the axes to sweep."""

    scenario: dict
    policies: tuple[Policy, ...]
    workloads: tuple[WorkloadChoice, ...]
    loads: tuple[float | None, ...]
    seeds: tuple[int, ...]
    baseline: str
    name: str = "sweep"

    def cells(self) -> list[Cell]:
        """Every cell, grouped by request stream (workload, load, seed), policies innermost."""
        return [
            Cell(p, w, q, s)
            for w, q, s, p in itertools.product(self.workloads, self.loads, self.seeds, self.policies)
        ]

    def scenario_of(self, cell: Cell, host=None) -> dict:
        """The raw scenario of ``cell``."""
        from vidur.scenario import _switch_policy
        from vidur.plugins import get_host

        host = host or get_host()
        raw = copy.deepcopy(self.scenario)
        if cell.workload.workload is not None:
            raw["workload"] = copy.deepcopy(cell.workload.workload)
        for section, kind, v in (("replica_scheduler", "replica_scheduler", cell.policy.replica),
                                 ("global_scheduler", "global_scheduler", cell.policy.router)):
            _switch_policy(raw, section, v.name, kind, host)
            raw[section].update(dict(v.options))
        if cell.qps is not None:
            raw.setdefault("workload", {})
            raw["workload"]["arrival"] = arrival_at_rate(raw["workload"].get("arrival"), cell.qps)
        raw["seed"] = int(cell.seed)
        sim = dict(raw.get("simulation") or {})
        sim["progress"] = False
        raw["simulation"] = sim
        metrics = dict(raw.get("metrics") or {})
        metrics.update(chrome_trace=False, plots=False)
        raw["metrics"] = metrics
        return raw


def build_policies(replicas: list[Variant], routers: list[Variant]) -> tuple[Policy, ...]:
    """Every (replica scheduler, router) pair; labels name the router only when several are swept."""
    out = []
    for r, g in itertools.product(replicas, routers):
        label = r.label if len(routers) == 1 else (g.label if len(replicas) == 1 else f"{r.label}/{g.label}")
        out.append(Policy(label, r, g))
    labels = [p.label for p in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise VidurError(f"policy {dup[0]!r} is given twice; drop the repeat")
    return tuple(out)


def _file_digest(path: str) -> str:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]
    except OSError:
        return "missing:" + path


def _drop_none(x):
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def cell_key(resolved: dict) -> str:
    """Hash of what decides a cell's result: its fully resolved scenario (every default
    filled in, trace files by content, progress left out) and :data:`SWEEP_VERSION`."""
    sc = copy.deepcopy(resolved)
    sc.get("simulation", {}).pop("progress", None)
    for section in ("arrival", "lengths"):
        sec = sc.get("workload", {}).get(section)
        if isinstance(sec, dict) and isinstance(sec.get("path"), str):
            sec["path"] = "sha256:" + _file_digest(sec["path"])
    text = json.dumps({"scenario": _drop_none(sc), "version": SWEEP_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_workload_file(path: str) -> WorkloadChoice:
    """A YAML file holding a ``workload:`` mapping (or the mapping itself); relative trace
    paths are taken relative to the file."""
    from vidur.config import load_yaml
    from vidur.scenario import _resolve_paths

    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise VidurError(f"{path}: a workload file holds a mapping (workload: {{arrival: ..., lengths: ...}})")
    wl = raw.get("workload", raw)
    if not isinstance(wl, dict):
        raise VidurError(f"{path}: 'workload' must be a mapping")
    holder = {"workload": copy.deepcopy(wl)}
    _resolve_paths(holder, Path(path).resolve().parent)
    return WorkloadChoice(Path(path).stem, holder["workload"])


def trace_workload(path: str, base: dict) -> WorkloadChoice:
    """Arrivals and lengths replayed from one trace CSV, keeping the scenario's request count
    (or duration) and length clipping."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise VidurError(f"trace file {path} does not exist; give a CSV with arrived_at, num_prefill_tokens, num_decode_tokens")
    wl = copy.deepcopy(base.get("workload") or {})
    lengths = wl.get("lengths") if isinstance(wl.get("lengths"), dict) else {}
    out: dict[str, Any] = {k: wl[k] for k in ("num_requests", "duration") if k in wl}
    out["arrival"] = {"name": "trace", "path": str(p.resolve())}
    out["lengths"] = {"name": "trace", "path": str(p.resolve()),
                      **({"max_tokens": lengths["max_tokens"]} if "max_tokens" in lengths else {})}
    return WorkloadChoice(p.stem, out)
