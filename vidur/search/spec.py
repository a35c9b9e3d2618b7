"""Search specs: which deployments to try, on which workload, under which SLOs.

A search spec is a YAML mapping::

    model: meta-llama/Meta-Llama-3-8B
    seed: 0                         # or seeds: [0, 1, 2] (max QPS as a mean with a 95 % interval)
    workload:                       # lengths fixed by the workload; arrivals swept
      lengths: {name: trace, path: ../traces/conv.csv, max_tokens: 8192}
      arrival: poisson              # its qps is set by the search (default poisson)
      duration: 300                 # seconds of arrivals per probe (or num_requests)
    slos:                           # metric: {quantile, max_s} (or a list of them)
      scheduling_delay: {quantile: 0.99, max_s: 5}   # the default; null drops it
      ttft: {quantile: 0.9, max_s: 2}
    grid:
      devices: [a100, h100]
      tensor_parallel: [1, 2]
      pipeline_parallel: [1]
      expert_parallel: [1, 2]       # MoE models: EP degree (must divide tp; others are skipped, saying why)
      weight_dtype: [auto, fp8]     # auto | bf16 | fp8 | int4 | mxfp4 (cluster.weight_dtype)
      kv_cache_dtype: [auto, fp8]   # auto | bf16 | fp8 (cluster.kv_cache_dtype)
      gpu_budget: 8                 # replicas = budget // (tp * pp); or replicas: [1, 2]
      replica_schedulers:           # a list value sweeps that knob
        - {name: sarathi, chunk_size: [512, 1024]}
        - vllm
      global_schedulers: [round_robin]
      nodes: {a100: dgx_a100}       # optional: the node type per device (default: its usual node)
    prices: {a100: 2.5}             # $/GPU-hour, overriding the device catalog
    search: {tolerance: 0.02}       # see SearchOptions (operating_point, target_qps, ...)
    runtime_estimator: auto         # passed through to every scenario
    memory_planner: paged

Unknown keys are one-line errors naming their dotted path.

Probe size. In an overloaded system the queue, and so the scheduling delay,
grows by roughly (overload fraction) × (elapsed time). A probe with ``D``
seconds of arrivals therefore only exposes overloads larger than about
``bound / D``: with a 5 s bound, a 2 % overload needs D ≈ 250 s. A fixed
*number* of requests shrinks D as the QPS grows (2,000 requests at 200 QPS
span 10 s: no 5 s queue can form) and overestimates the max QPS badly, so
probes are sized by **duration** (default 300 s, i.e. ``max QPS × 300``
requests at the answer), with ``num_requests`` available for workloads that
need it. Cost is kept down by a coarse stage of shorter probes
(``search.coarse_fraction``) that only locates the answer: the final
bracket always comes from full-size probes.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import attrs

from vidur.config import load_yaml, parse_value, set_dotted, structure
from vidur.errors import VidurError
from vidur.hardware.device_file import is_device_file
from vidur.plugins import PluginHost, get_host, suggest

#: bump when the search algorithm changes its answers (invalidates resumed results)
ALGORITHM_VERSION = 1

DEFAULT_DURATION = 300.0


def _pos(name):
    def check(_inst, _attr, value):
        if value is not None and not value > 0:
            raise VidurError(f"search.{name} must be > 0, got {value!r}")

    return check


@attrs.frozen
class SearchOptions:
    """How each configuration's maximum QPS is searched.

    - ``tolerance``: stop when the passing and failing QPS differ by at most
      this fraction (default 2 %).
    - ``coarse_fraction``: first locate the answer with probes this fraction
      of the full size (duration or request count), then refine with
      full-size probes only; 0 disables the coarse stage.
    - ``coarse_tolerance``: tolerance of the coarse stage.
    - ``initial_qps``: the first probe's QPS; default: 1.1 × a saturation
      throughput estimate (:func:`vidur.search.probe.estimate_capacity`), or
      ``initial_qps_per_replica`` × replicas when that gives nothing.
    - ``expansion``: factor between the first stage's bracketing probes
      (squared after each probe that does not flip the verdict).
    - ``min_qps``/``max_qps``: search range; a configuration failing at
      ``min_qps`` is infeasible, one passing at ``max_qps`` is reported capped.
    - ``drain_s``: the cap on simulated time of a probe is its last arrival
      (or arrival window) plus ``drain_s`` seconds (default: max(60 s, 2 × the
      largest SLO bound)); requests unfinished at the cap count as violating.
    - ``min_requests``: at least this many requests per probe.
    - ``max_probes``: give up refining after this many probes.
    - ``operating_point``: the fraction of its max QPS at which each
      configuration's latencies for the Pareto front are measured, by one more
      full-size probe at that load (default 0.9): latency where bisection
      stopped sits on a cliff (2 % more load can double it).
    - ``target_qps``: also size, for every configuration, the fleet of its
      replicas that serves this QPS and rank the fleets by cost
      (:func:`vidur.search.cost.fleet_fields`); it does not change any
      simulation, so it is not part of the resume key.
    """

    tolerance: float = attrs.field(default=0.02, validator=_pos("tolerance"))
    coarse_fraction: float = 0.2
    coarse_tolerance: float = attrs.field(default=0.04, validator=_pos("coarse_tolerance"))
    initial_qps: float | None = attrs.field(default=None, validator=_pos("initial_qps"))
    initial_qps_per_replica: float = attrs.field(default=1.0, validator=_pos("initial_qps_per_replica"))
    expansion: float = 1.25
    min_qps: float = attrs.field(default=0.01, validator=_pos("min_qps"))
    max_qps: float = attrs.field(default=10000.0, validator=_pos("max_qps"))
    drain_s: float | None = attrs.field(default=None, validator=_pos("drain_s"))
    min_requests: int = attrs.field(default=100, validator=_pos("min_requests"))
    max_probes: int = attrs.field(default=40, validator=_pos("max_probes"))
    target_qps: float | None = attrs.field(default=None, validator=_pos("target_qps"))
    operating_point: float = attrs.field(default=0.9, validator=_pos("operating_point"))

    def __attrs_post_init__(self):
        if not 0 <= self.coarse_fraction < 1:
            raise VidurError(f"search.coarse_fraction must be in [0, 1), got {self.coarse_fraction!r}")
        if not self.operating_point <= 1:
            raise VidurError(f"search.operating_point must be in (0, 1] (a fraction of max QPS), got {self.operating_point!r}")
        if not self.expansion > 1:
            raise VidurError(f"search.expansion must be > 1, got {self.expansion!r}")
        if self.min_qps >= self.max_qps:
            raise VidurError(f"search.min_qps ({self.min_qps}) must be below search.max_qps ({self.max_qps})")


@attrs.frozen
class SLOTarget:
    """The ``quantile`` of ``metric`` must be <= ``max_s`` seconds."""

    metric: str
    quantile: float
    max_s: float

    @property
    def column(self) -> str:
        """Results-table column holding this SLO's value at the maximum QPS."""
        return f"{self.metric}_p{self.quantile * 100:g}_s"

    @property
    def label(self) -> str:
        return f"{self.metric} p{self.quantile * 100:g} <= {self.max_s:g} s"


@attrs.frozen
class _SLOEntry:
    max_s: float
    quantile: float = 0.99


@attrs.frozen
class _GridRaw:
    devices: list[str]
    tensor_parallel: list[int] = attrs.Factory(lambda: [1])
    pipeline_parallel: list[int] = attrs.Factory(lambda: [1])
    expert_parallel: list[int] = attrs.Factory(lambda: [1])
    weight_dtype: list[str] = attrs.Factory(lambda: ["auto"])
    kv_cache_dtype: list[str] = attrs.Factory(lambda: ["auto"])
    replicas: list[int] | None = None
    gpu_budget: int | None = None
    replica_schedulers: list[Any] = attrs.Factory(lambda: ["sarathi"])
    global_schedulers: list[Any] = attrs.Factory(lambda: ["round_robin"])
    nodes: dict[str, str] = attrs.Factory(dict)


@attrs.frozen
class _SpecRaw:
    model: str
    workload: dict[str, Any]
    grid: _GridRaw
    slos: dict[str, Any] | None = None
    prices: dict[str, float] = attrs.Factory(dict)
    search: SearchOptions = SearchOptions()
    seed: int = 0
    seeds: list[int] | None = None
    runtime_estimator: Any = None
    memory_planner: Any = None


@attrs.frozen
class ConfigPoint:
    """One deployment of the grid (JSON-able fields only)."""

    index: int
    device: str
    tensor_parallel: int
    pipeline_parallel: int
    replicas: int
    replica_scheduler: dict
    global_scheduler: dict
    node: str | None = None
    skip_reason: str | None = None
    expert_parallel: int = 1
    weight_dtype: str = "auto"
    kv_cache_dtype: str = "auto"

    @property
    def gpus(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel * self.replicas

    @property
    def scheduler_label(self) -> str:
        return _variant_label(self.replica_scheduler)

    @property
    def router_label(self) -> str:
        """The global scheduler with its options, e.g. ``prefix_aware(prefix_weight=1.0)``."""
        return _variant_label(self.global_scheduler)

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``h100 tp2 pp1 x4 sarathi(chunk_size=512) round_robin``."""
        ep = f" ep{self.expert_parallel}" if self.expert_parallel != 1 else ""
        dt = f" w:{self.weight_dtype}" if self.weight_dtype != "auto" else ""
        dt += f" kv:{self.kv_cache_dtype}" if self.kv_cache_dtype != "auto" else ""
        return (
            f"{self.device} tp{self.tensor_parallel} pp{self.pipeline_parallel}{ep}{dt} x{self.replicas} "
            f"{self.scheduler_label} {self.router_label}"
        )


def _variant_label(variant: dict) -> str:
    """``name(k=v,...)`` of a plugin variant (``name`` alone without options)."""
    knobs = {k: v for k, v in variant.items() if k != "name"}
    inner = ",".join(f"{k}={v}" for k, v in knobs.items())
    return f"{variant['name']}({inner})" if inner else variant["name"]


@attrs.frozen
class SearchSpec:
    """A validated search spec: the base scenario, SLOs, grid, prices and options."""

    path: str | None
    model: str
    seed: int
    workload: dict  # raw workload section (paths absolute), without num_requests/duration
    probe_duration: float | None  # seconds of arrivals per full probe, or
    probe_requests: int | None  # requests per full probe
    slos: tuple[SLOTarget, ...]
    configs: tuple[ConfigPoint, ...]
    prices: dict  # device -> $/GPU-hour (resolved for every device of the grid)
    price_sources: dict
    options: SearchOptions
    extra_sections: dict  # runtime_estimator / memory_planner passthrough
    device_files: dict = attrs.Factory(dict)  # device name -> the device file it came from (grid.devices paths)
    seeds: tuple[int, ...] = ()  # every seed searched (``seeds:``); the first is ``seed``, the one reported in full

    @property
    def drain_s(self) -> float:
        if self.options.drain_s is not None:
            return float(self.options.drain_s)
        return max(60.0, 2.0 * max((s.max_s for s in self.slos), default=0.0))

    def base_scenario(self, cfg: ConfigPoint, seed: int | None = None) -> dict:
        """The raw scenario mapping of ``cfg`` (qps and probe size are set per probe); ``seed``
        replaces the spec's seed (another of ``seeds``)."""
        raw: dict[str, Any] = {
            "model": self.model,
            "seed": self.seed if seed is None else seed,
            "cluster": {
                "device": cfg.device,
                "num_replicas": cfg.replicas,
                "tensor_parallel": cfg.tensor_parallel,
                "pipeline_parallel": cfg.pipeline_parallel,
            },
            "replica_scheduler": copy.deepcopy(cfg.replica_scheduler),
            "global_scheduler": copy.deepcopy(cfg.global_scheduler),
            "workload": copy.deepcopy(self.workload),
            "simulation": {"progress": False},
        }
        if cfg.node:
            raw["cluster"]["node"] = cfg.node
        # only when set, so the keys of earlier (dense, default-precision) results stay the same
        if cfg.expert_parallel != 1:
            raw["cluster"]["expert_parallel"] = cfg.expert_parallel
        if cfg.weight_dtype != "auto":
            raw["cluster"]["weight_dtype"] = cfg.weight_dtype
        if cfg.kv_cache_dtype != "auto":
            raw["cluster"]["kv_cache_dtype"] = cfg.kv_cache_dtype
        if cfg.device in self.device_files:  # worker processes register it again from the file
            raw["cluster"]["device_file"] = self.device_files[cfg.device]
        for k, v in self.extra_sections.items():
            raw[k] = copy.deepcopy(v)
        return raw


def latency_columns(spec: SearchSpec) -> list[str]:
    """The latency columns the Pareto frontier is computed against: every SLO, then TTFT/TPOT/E2E p99."""
    cols = [s.column for s in spec.slos] + ["ttft_p99_s", "tpot_p99_s", "e2e_p99_s"]
    return list(dict.fromkeys(cols))


def op_column(col: str) -> str:
    """The results column of latency ``col`` measured at the operating point (``search.operating_point``)."""
    return f"op_{col}"


# --------------------------------------------------------------- loading


def _as_list(raw: dict, key: str) -> None:
    if key in raw and raw[key] is not None and not isinstance(raw[key], list):
        raw[key] = [raw[key]]


def _parse_slos(raw: Any) -> tuple[SLOTarget, ...]:
    from vidur.metrics.table import slo_metrics

    SLO_METRICS = slo_metrics()

    entries: dict[str, Any] = {"scheduling_delay": {"quantile": 0.99, "max_s": 5.0}}
    if raw is not None:
        if not isinstance(raw, dict):
            raise VidurError("'slos' must be a mapping of metric name to {quantile, max_s}")
        entries.update(raw)
    out = []
    for metric, spec in entries.items():
        if metric not in SLO_METRICS:
            raise VidurError(
                f"unknown SLO metric {metric!r}{suggest(metric, SLO_METRICS)}; valid metrics: {', '.join(SLO_METRICS)}"
            )
        if spec is None:
            continue
        specs = spec if isinstance(spec, list) else [spec]
        for i, one in enumerate(specs):
            where = f"slos.{metric}" + (f".{i}" if isinstance(spec, list) else "")
            e = structure(one, _SLOEntry, where)
            if not 0 < e.quantile <= 1:
                raise VidurError(f"{where}.quantile must be in (0, 1], got {e.quantile}")
            if not e.max_s > 0:
                raise VidurError(f"{where}.max_s must be > 0 seconds, got {e.max_s}")
            out.append(SLOTarget(metric, float(e.quantile), float(e.max_s)))
    if not out:
        raise VidurError("no SLOs: the search needs at least one (e.g. slos: {scheduling_delay: {quantile: 0.99, max_s: 5}})")
    cols = [s.column for s in out]
    dup = next((c for c in cols if cols.count(c) > 1), None)
    if dup:
        raise VidurError(f"SLO {dup} is given twice")
    return tuple(out)


def _expand_variants(section: str, variants: list, host: PluginHost, kind: str) -> list[dict]:
    """``[{name: sarathi, chunk_size: [512, 1024]}, vllm]`` -> one dict per knob combination."""
    out = []
    for i, v in enumerate(variants):
        where = f"grid.{section}.{i}"
        if isinstance(v, str):
            v = {"name": v}
        if not isinstance(v, dict) or "name" not in v:
            raise VidurError(f"'{where}' must be a plugin name or a mapping with a 'name' key")
        cls = host.get(kind, str(v["name"]))  # unknown names list the valid ones
        keys = [k for k in v if k != "name"]
        choices = []
        for k in keys:
            vals = v[k] if isinstance(v[k], list) else [v[k]]
            if not vals:
                raise VidurError(f"'{where}.{k}' is an empty list: the grid has no configurations")
            choices.append(vals)
        for combo in itertools.product(*choices):
            knobs = dict(zip(keys, combo))
            structure(knobs, cls.Config, where)  # typos fail here, with their grid path
            out.append({"name": str(v["name"]), **knobs})
    return out


def _check_trace_files(wl: dict) -> None:
    """A workload trace that is not there is an input error (exit 2), not a configuration
    that misses its SLOs (issue #15 item 3d)."""
    for section in ("arrival", "lengths"):
        sec = wl.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("path"), str) and sec["path"]:
            if not Path(sec["path"]).expanduser().is_file():
                raise VidurError(f"workload.{section}.path: trace file {sec['path']} does not exist; "
                                 "fix the path (relative paths are taken from the spec's folder)")


def _resolve_workload_paths(wl: dict, base: Path | None) -> None:
    for section in ("arrival", "lengths"):
        sec = wl.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("path"), str) and base is not None:
            p = Path(sec["path"]).expanduser()
            if not p.is_absolute():
                sec["path"] = str((base / p).resolve())


def spec_from_dict(raw: dict, *, path: str | Path | None = None, host: PluginHost | None = None) -> SearchSpec:
    """Validate a search-spec mapping; relative trace paths are taken relative to ``path``'s folder."""
    host = host or get_host()
    raw = copy.deepcopy(raw)
    if not isinstance(raw, dict):
        raise VidurError("a search spec must be a mapping of keys to values")
    grid = raw.get("grid")
    if isinstance(grid, dict):
        for key in (
            "devices", "tensor_parallel", "pipeline_parallel", "expert_parallel", "weight_dtype", "kv_cache_dtype",
            "replicas", "replica_schedulers", "global_schedulers",
        ):
            _as_list(grid, key)
    elif grid is None:
        raise VidurError("missing required key 'grid' (devices, tensor_parallel, replicas or gpu_budget, replica_schedulers)")
    if isinstance(raw.get("search"), dict) is False and raw.get("search") is not None:
        raise VidurError("'search' must be a mapping")
    # the model is every configuration's: one that is missing or unknown is refused once, here, rather
    # than skipped by each configuration
    from vidur.model.catalog import load_model
    from vidur.scenario import model_of

    load_model(model_of(raw), host)
    parsed: _SpecRaw = structure(raw, _SpecRaw, "")
    g = parsed.grid
    for key in (
        "devices", "tensor_parallel", "pipeline_parallel", "expert_parallel", "weight_dtype", "kv_cache_dtype",
        "replica_schedulers", "global_schedulers",
    ):
        if not getattr(g, key):
            raise VidurError(f"grid.{key} is empty: the grid has no configurations")
    if g.replicas is not None and g.gpu_budget is not None:
        raise VidurError("set grid.replicas or grid.gpu_budget, not both")
    if g.replicas is not None and not g.replicas:
        raise VidurError("grid.replicas is empty: the grid has no configurations")
    for key in ("tensor_parallel", "pipeline_parallel", "expert_parallel", "replicas"):
        for v in getattr(g, key) or []:
            if v < 1:
                raise VidurError(f"grid.{key} values must be >= 1, got {v}")
    from vidur.model.spec import KV_DTYPE_BYTES, WEIGHT_DTYPES

    for key, allowed in (("weight_dtype", WEIGHT_DTYPES), ("kv_cache_dtype", ("auto", *KV_DTYPE_BYTES))):
        for v in getattr(g, key):
            if v not in allowed:
                raise VidurError(f"grid.{key} values must be among {', '.join(allowed)}, got {v!r}")
    if g.gpu_budget is not None and g.gpu_budget < 1:
        raise VidurError(f"grid.gpu_budget must be >= 1, got {g.gpu_budget}")

    # workload: sizes of a full probe; the arrival process must accept a qps
    wl = dict(parsed.workload)
    for key in wl:
        if key not in ("arrival", "lengths", "num_requests", "duration"):
            raise VidurError(
                f"unknown key 'workload.{key}'{suggest(key, ['arrival', 'lengths', 'num_requests', 'duration'])}; "
                "valid keys: arrival, lengths, num_requests, duration"
            )
    n, d = wl.pop("num_requests", None), wl.pop("duration", None)
    if n is not None and d is not None:
        raise VidurError("set workload.num_requests or workload.duration (the size of one probe), not both")
    if n is None and d is None:
        d = DEFAULT_DURATION
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise VidurError(f"workload.num_requests must be a positive integer, got {n!r}")
    if d is not None and (not isinstance(d, (int, float)) or isinstance(d, bool) or d <= 0):
        raise VidurError(f"workload.duration must be > 0 seconds, got {d!r}")
    arrival = wl.get("arrival") or {"name": "poisson"}
    if isinstance(arrival, str):
        arrival = {"name": arrival}
    if not isinstance(arrival, dict):
        raise VidurError("'workload.arrival' must be a mapping with a 'name' key")
    arrival = dict(arrival)
    arrival.setdefault("name", "poisson")
    arr_cls = host.get("workload.arrival", str(arrival["name"]))
    if not (attrs.has(arr_cls.Config) and "qps" in {a.name for a in attrs.fields(arr_cls.Config)}):
        raise VidurError(
            f"arrival process {arrival['name']!r} has no qps to sweep; use poisson (the default), gamma or trace"
        )
    arrival.pop("qps", None)
    wl["arrival"] = arrival
    base = Path(path).resolve().parent if path is not None else None
    _resolve_workload_paths(wl, base)
    _check_trace_files(wl)

    slos = _parse_slos(parsed.slos)

    rs = _expand_variants("replica_schedulers", g.replica_schedulers, host, "replica_scheduler")
    gs = _expand_variants("global_schedulers", g.global_schedulers, host, "global_scheduler")

    # devices given as files (vidur.hardware.device_file): read here, searched by their names (each
    # configuration's scenario carries the file; nothing is registered)
    from vidur.resolve.device import resolve_device

    device_files: dict[str, str] = {}
    file_specs: dict = {}
    devices = []
    for dev in g.devices:
        if is_device_file(dev):
            f = Path(dev).expanduser()
            if not f.is_absolute() and base is not None:
                f = base / f
            spec = resolve_device(str(f), host).spec
            device_files[spec.name] = str(f.resolve())
            file_specs[spec.name] = spec
            dev = spec.name
        if dev in devices:
            raise VidurError(f"grid.devices lists {dev!r} twice")
        devices.append(dev)
    g = attrs.evolve(g, devices=devices)

    # prices: spec overrides, else the device catalog; a device without one is an error
    prices, sources = {}, {}
    for dev in g.devices:
        spec = file_specs.get(dev) or host.get("device", dev)
        if dev in parsed.prices:
            p = parsed.prices[dev]
            if not p > 0:
                raise VidurError(f"prices.{dev} must be > 0 $/GPU-hour, got {p}")
            prices[dev], sources[dev] = float(p), "search spec (prices)"
        elif spec.price_per_hour:
            prices[dev], sources[dev] = float(spec.price_per_hour), spec.price_source or "device catalog"
        else:
            raise VidurError(f"device {dev!r} has no price; set prices.{dev} ($ per GPU-hour) in the search spec")
    for dev in parsed.prices:
        if dev not in g.devices and dev not in file_specs:
            host.get("device", dev)  # a typo fails; a price for a device not searched is fine
    for dev, node in g.nodes.items():
        if dev not in g.devices:
            raise VidurError(f"grid.nodes.{dev}: {dev!r} is not in grid.devices ({', '.join(g.devices)})")
        host.get("node", node)

    configs = []
    reps_for = (lambda tp, pp: [g.gpu_budget // (tp * pp)]) if g.gpu_budget is not None else (lambda tp, pp: g.replicas or [1])
    layouts = itertools.product(
        g.devices, g.tensor_parallel, g.pipeline_parallel, g.expert_parallel, g.weight_dtype, g.kv_cache_dtype
    )
    for dev, tp, pp, ep, wd, kd in layouts:
        for reps in reps_for(tp, pp):
            for r, gl in itertools.product(rs, gs):
                skip = None
                if reps == 0:
                    skip = f"one replica needs tp x pp = {tp * pp} GPUs, more than the {g.gpu_budget}-GPU budget"
                elif tp % ep:
                    skip = f"expert_parallel={ep} does not divide tensor_parallel={tp}"
                configs.append(
                    ConfigPoint(
                        index=len(configs), device=dev, tensor_parallel=tp, pipeline_parallel=pp,
                        replicas=max(reps, 1) if skip is None else 0, replica_scheduler=r, global_scheduler=gl,
                        node=g.nodes.get(dev), skip_reason=skip, expert_parallel=ep, weight_dtype=wd,
                        kv_cache_dtype=kd,
                    )
                )
    extra = {}
    for key in ("runtime_estimator", "memory_planner"):
        val = getattr(parsed, key)
        if val is not None:
            extra[key] = val
    seeds = _parse_seeds(parsed.seeds, parsed.seed, "seed" in raw)
    spec = SearchSpec(
        path=str(path) if path is not None else None,
        model=parsed.model,
        seed=seeds[0],
        seeds=seeds,
        workload=wl,
        probe_duration=float(d) if d is not None else None,
        probe_requests=n,
        slos=slos,
        configs=tuple(configs),
        prices=prices,
        price_sources=sources,
        options=parsed.search,
        extra_sections=extra,
        device_files=device_files,
    )
    _validate_scenarios(spec, host)
    return spec


def _parse_seeds(seeds: list[int] | None, seed: int, seed_given: bool) -> tuple[int, ...]:
    """``seeds: [...]`` (each configuration searched once per seed; max QPS as a mean with an
    interval), or the one ``seed``."""
    if seeds is None:
        return (seed,)
    if not seeds:
        raise VidurError("seeds is empty: give at least one seed, e.g. seeds: [0, 1, 2]")
    if seed_given and seed != seeds[0]:
        raise VidurError(f"seed {seed} is not the first of seeds {seeds} (the seed reported in full); "
                         "drop seed or make it the first of seeds")
    if len(set(seeds)) != len(seeds):
        raise VidurError(f"seeds lists a seed twice: {seeds}")
    return tuple(int(x) for x in seeds)


def _validate_scenarios(spec: SearchSpec, host: PluginHost) -> None:
    """Structure every configuration's scenario once, so typos in knobs fail before any simulation."""
    from vidur.scenario import scenario_from_dict

    seen = set()
    for cfg in spec.configs:
        if cfg.skip_reason:
            continue
        sig = json.dumps([cfg.replica_scheduler, cfg.global_scheduler], sort_keys=True)
        if sig in seen:
            continue
        seen.add(sig)
        raw = spec.base_scenario(cfg)
        raw["workload"]["arrival"]["qps"] = 1.0
        raw["workload"]["num_requests"] = 1
        scenario_from_dict(raw, host)


def load_search_spec(path: str | Path, *, settings: list[tuple[str, Any]] = (), host: PluginHost | None = None) -> SearchSpec:
    """Read and validate a search-spec YAML; ``settings`` are ``(dotted.key, value)`` overrides."""
    raw = load_yaml(path)
    for key, value in settings:
        set_dotted(raw, key, parse_value(value) if isinstance(value, str) else value)
    return spec_from_dict(raw, path=path, host=host)


# --------------------------------------------------------------- keys


#: search options that only post-process results (leaving them out keeps earlier keys, and results, valid)
_NOT_IN_KEY = ("target_qps",)

_FILE_HASHES: dict[tuple[str, float, int], str] = {}


def _file_digest(path: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return f"missing:{path}"
    key = (str(p), st.st_mtime, st.st_size)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return _FILE_HASHES[key]


def config_key(spec: SearchSpec, scenario: dict) -> str:
    """Hash of what decides a configuration's result: its scenario (trace files by
    content), the probe size, the SLOs, the search options and the algorithm version.
    Prices are left out: they only scale the cost columns."""
    sc = copy.deepcopy(scenario)
    for section in ("arrival", "lengths"):
        sec = sc.get("workload", {}).get(section)
        if isinstance(sec, dict) and isinstance(sec.get("path"), str):
            sec["path"] = "sha256:" + _file_digest(sec["path"])
    payload = {
        "scenario": sc,
        "probe": [spec.probe_duration, spec.probe_requests, spec.drain_s],
        "slos": [attrs.astuple(s) for s in spec.slos],
        "options": {k: v for k, v in attrs.asdict(spec.options).items() if k not in _NOT_IN_KEY},
        "version": ALGORITHM_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
