"""Scenarios: what to simulate, loaded from YAML into frozen attrs objects.

Each plugin section (``replica_scheduler``, ``global_scheduler``,
``memory_planner``, ``runtime_estimator``, ``workload.arrival``,
``workload.lengths``) is ``{name: <plugin name>, <that plugin's Config keys>}``
and is structured into the chosen plugin's own ``Config`` class.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import attrs
import yaml

from vidur.config import load_yaml, parse_value, set_dotted, structure, unstructure
from vidur.errors import VidurError
from vidur.plugins import PluginHost, get_host


@attrs.frozen
class Policy:
    """A chosen plugin: its registered ``name`` and its structured ``config``."""

    name: str
    config: Any

    def to_dict(self) -> dict:
        return {"name": self.name, **unstructure(self.config)}


@attrs.frozen
class ClusterConfig:
    """The deployment: which GPU, how many replicas, how each is parallelised."""

    device: str = "h100"  # a registered device, or a device file (vidur.hardware.device_file)
    node: str | None = None  # default: the device's usual node (e.g. dgx_h100)
    num_replicas: int = 1
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    engine_mode: str | None = None  # "cuda_graphs" or "eager"; sets the estimator's CPU-overhead model
    device_file: str | None = None  # where ``device`` came from when it was a file (reloaded with the scenario)
    expert_parallel: int = 1  # EP degree of MoE layers, dividing tensor_parallel (vidur.model.catalog.deploy)
    weight_dtype: str = "auto"  # auto (the checkpoint's) | bf16 | fp16 | fp8 | int4 | mxfp4 (vLLM --quantization)
    kv_cache_dtype: str = "auto"  # auto (the model's dtype) | bf16 | fp16 | fp8 (vLLM --kv-cache-dtype)

    def __attrs_post_init__(self):
        from vidur.model.spec import KV_DTYPE_BYTES, WEIGHT_DTYPES

        if self.engine_mode not in (None, "cuda_graphs", "eager"):
            raise VidurError(f"cluster.engine_mode must be cuda_graphs or eager, got {self.engine_mode!r}")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise VidurError(f"cluster.weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weight_dtype!r}")
        if self.kv_cache_dtype not in ("auto", *KV_DTYPE_BYTES):
            raise VidurError(
                f"cluster.kv_cache_dtype must be one of auto, {', '.join(KV_DTYPE_BYTES)}, got {self.kv_cache_dtype!r}"
            )
        for key in ("num_replicas", "tensor_parallel", "pipeline_parallel", "expert_parallel"):
            if getattr(self, key) < 1:
                raise VidurError(f"cluster.{key} must be >= 1, got {getattr(self, key)}")


@attrs.frozen
class SLO:
    """A latency target: the ``quantile`` of ``metric`` must stay <= ``max_s`` seconds."""

    max_s: float
    quantile: float = 0.99

    def __attrs_post_init__(self):
        if not 0 < self.quantile <= 1:
            raise VidurError(f"SLO quantile must be in (0, 1], got {self.quantile}")
        if self.max_s <= 0:
            raise VidurError(f"SLO max_s must be > 0 seconds, got {self.max_s}")


#: ``metrics.batch_log`` values (vidur.metrics.batch_summary decides ``auto``)
BATCH_LOG_MODES = ("auto", "full", "summary")


@attrs.frozen
class MetricsConfig:
    """What to measure and write."""

    slos: dict[str, SLO] = attrs.Factory(dict)
    chrome_trace: bool = False
    plots: bool = False
    tables: bool = True
    #: ``full``: one row per iteration (batches table); ``summary``: per-replica
    #: aggregates, histograms and time series, memory flat in the iterations;
    #: ``auto``: full up to 100,000 requests (see vidur.metrics.batch_summary)
    batch_log: str = "auto"
    #: the run directory's tables: ``parquet`` (pyarrow) or ``csv``
    table_format: str = "parquet"

    def __attrs_post_init__(self):
        if self.batch_log not in BATCH_LOG_MODES:
            raise VidurError(
                f"metrics.batch_log must be one of {', '.join(BATCH_LOG_MODES)}, got {self.batch_log!r}"
            )
        if self.table_format not in ("parquet", "csv"):
            raise VidurError(f"metrics.table_format must be parquet or csv, got {self.table_format!r}")


@attrs.frozen
class SimulationConfig:
    """Engine knobs. ``fast_forward`` skips runs of identical decode iterations
    exactly (results equal stepping every iteration); ``max_time`` caps
    simulated seconds. ``workers`` (``auto`` or a whole number >= 1) splits
    the replicas over that many processes when the router decides without
    live state (:mod:`vidur.engine.parallel`; identical results); ``auto``
    is one per CPU, and one process below 20,000 requests."""

    fast_forward: bool = True
    max_time: float | None = None
    progress: bool = True
    workers: Any = "auto"

    def __attrs_post_init__(self):
        w = self.workers
        if isinstance(w, float) and w.is_integer():
            object.__setattr__(self, "workers", w := int(w))
        if w != "auto" and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise VidurError(f"simulation.workers must be auto or a whole number >= 1, got {w!r}")
        if self.max_time is not None and not self.max_time > 0:
            raise VidurError(
                f"simulation.max_time must be > 0 simulated seconds (or null for no cap), got {self.max_time!r}"
            )


@attrs.frozen
class WorkloadConfig:
    """How many requests and how they arrive and how long they are."""

    arrival: Policy
    lengths: Policy
    num_requests: int | None = None
    duration: float | None = None


@attrs.frozen
class Scenario:
    """A whole simulation: model x cluster x policies x workload."""

    model: str
    cluster: ClusterConfig
    replica_scheduler: Policy
    global_scheduler: Policy
    memory_planner: Policy
    runtime_estimator: Policy
    workload: WorkloadConfig
    metrics: MetricsConfig = MetricsConfig()
    simulation: SimulationConfig = SimulationConfig()
    seed: int = 0

    def to_dict(self) -> dict:
        d = {
            "model": self.model,
            "seed": self.seed,
            "cluster": unstructure(self.cluster),
            "replica_scheduler": self.replica_scheduler.to_dict(),
            "global_scheduler": self.global_scheduler.to_dict(),
            "memory_planner": self.memory_planner.to_dict(),
            "runtime_estimator": self.runtime_estimator.to_dict(),
            "workload": {
                "num_requests": self.workload.num_requests,
                "duration": self.workload.duration,
                "arrival": self.workload.arrival.to_dict(),
                "lengths": self.workload.lengths.to_dict(),
            },
            "metrics": unstructure(self.metrics),
            "simulation": unstructure(self.simulation),
        }
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes) -> "Scenario":
        return attrs.evolve(self, **changes)


TOP_KEYS = (
    "model",
    "seed",
    "cluster",
    "replica_scheduler",
    "global_scheduler",
    "memory_planner",
    "runtime_estimator",
    "workload",
    "metrics",
    "simulation",
)

DEFAULT_POLICIES = {
    "replica_scheduler": "sarathi",
    "global_scheduler": "round_robin",
    "memory_planner": "paged",
    "runtime_estimator": "auto",
}

POLICY_KINDS = {
    "replica_scheduler": "replica_scheduler",
    "global_scheduler": "global_scheduler",
    "memory_planner": "memory_planner",
    "runtime_estimator": "runtime_estimator",
    "arrival": "workload.arrival",
    "lengths": "workload.length",
}


def _policy(raw: Any, kind: str, where: str, host: PluginHost, default: str | None = None) -> Policy:
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise VidurError(f"'{where}' must be a mapping with a 'name' key, got {type(raw).__name__}")
    raw = dict(raw)
    name = raw.pop("name", default)
    if name is None:
        raise VidurError(f"'{where}.name' is required (valid: {', '.join(host.names(kind))})")
    if name == "auto" and kind == "runtime_estimator":
        if raw:
            raise VidurError(
                f"unknown key '{where}.{sorted(raw)[0]}': the 'auto' estimator takes no options; "
                "name an estimator (roofline, profile) to set its options"
            )
        return Policy("auto", _AutoConfig())
    cls = host.get(kind, str(name))
    if not attrs.has(cls.Config):
        raise VidurError(
            f"{kind.replace('_', ' ')} {name!r}: its Config ({getattr(cls.Config, '__qualname__', cls.Config)!r}) "
            "is not an attrs class; decorate it with @attrs.frozen (see CONTRIBUTING, 'Plugin options')"
        )
    return Policy(str(name), structure(raw, cls.Config, root=where))


@attrs.frozen
class _AutoConfig:
    """``runtime_estimator: auto`` takes no options."""


def _whole(value: Any, message: str, low: int) -> int:
    """``value`` as an int >= ``low`` (an integral float such as YAML's ``1e9`` counts), else ``message``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise VidurError(f"{message}, got {value!r}")
    return value


def model_of(raw: dict) -> str:
    """The ``model`` key of a scenario or search spec, or one line saying what is wrong with it."""
    model = raw.get("model")
    if model is None:
        raise VidurError("missing required key 'model' (a Hugging Face id such as meta-llama/Meta-Llama-3-8B, or a path to config.json)")
    if not isinstance(model, str) or not model:
        raise VidurError("model must be a Hugging Face id or a path to a config.json")
    return model


def scenario_from_dict(raw: dict, host: PluginHost | None = None) -> Scenario:
    """Validate and structure a scenario mapping (after overrides)."""
    host = host or get_host()
    raw = copy.deepcopy(raw)
    from vidur.plugins import suggest

    if "grid" in raw and "slos" in raw:
        raise VidurError("this is a capacity-search spec (it has 'grid' and 'slos'), not a scenario; run it with `vidur search`")
    for key in raw:
        if key not in TOP_KEYS:
            raise VidurError(f"unknown key '{key}'{suggest(key, TOP_KEYS)}; valid keys: {', '.join(TOP_KEYS)}")
    model = model_of(raw)
    wl = raw.get("workload") or {}
    if not isinstance(wl, dict):
        raise VidurError("'workload' must be a mapping")
    wl = dict(wl)
    for key in wl:
        if key not in ("arrival", "lengths", "num_requests", "duration"):
            raise VidurError(
                f"unknown key 'workload.{key}'{suggest(key, ['arrival', 'lengths', 'num_requests', 'duration'])}; "
                "valid keys: arrival, lengths, num_requests, duration"
            )
    arrival = _policy(wl.pop("arrival", None), "workload.arrival", "workload.arrival", host, "poisson")
    lengths = _policy(wl.pop("lengths", None), "workload.length", "workload.lengths", host, "lognormal")
    num_requests, duration = wl.get("num_requests"), wl.get("duration")
    if (num_requests is None) == (duration is None):
        raise VidurError("set exactly one of workload.num_requests and workload.duration")
    if num_requests is not None:
        num_requests = _whole(num_requests, "workload.num_requests must be a positive integer", low=1)
    if duration is not None and (
        not isinstance(duration, (int, float)) or isinstance(duration, bool) or not 0 < duration < float("inf")
    ):
        raise VidurError(f"workload.duration must be > 0 seconds, got {duration!r}")
    seed = _whole(raw.get("seed", 0), "seed must be an integer >= 0 (numpy's generators take no negative seeds)", low=0)
    return Scenario(
        model=model,
        seed=seed,
        cluster=_cluster(raw.get("cluster"), host),
        replica_scheduler=_policy(raw.get("replica_scheduler"), "replica_scheduler", "replica_scheduler", host, DEFAULT_POLICIES["replica_scheduler"]),
        global_scheduler=_policy(raw.get("global_scheduler"), "global_scheduler", "global_scheduler", host, DEFAULT_POLICIES["global_scheduler"]),
        memory_planner=_policy(raw.get("memory_planner"), "memory_planner", "memory_planner", host, DEFAULT_POLICIES["memory_planner"]),
        runtime_estimator=_policy(raw.get("runtime_estimator"), "runtime_estimator", "runtime_estimator", host, DEFAULT_POLICIES["runtime_estimator"]),
        workload=WorkloadConfig(arrival=arrival, lengths=lengths, num_requests=num_requests, duration=duration),
        metrics=structure(raw.get("metrics"), MetricsConfig, "metrics"),
        simulation=structure(raw.get("simulation"), SimulationConfig, "simulation"),
    )


def _cluster(raw: Any, host: PluginHost) -> ClusterConfig:
    """The cluster section; a device given as a file is checked and named by its ``name``, and the
    file is kept in ``device_file`` (nothing is registered: the simulation resolves it again)."""
    from vidur.hardware.device_file import is_device_file
    from vidur.resolve.device import resolve_device

    cluster = structure(raw, ClusterConfig, "cluster")
    src = cluster.device_file or (cluster.device if is_device_file(cluster.device) else None)
    if src is None:
        return cluster
    spec = resolve_device(cluster.device, host, device_file=src).spec
    return attrs.evolve(cluster, device=spec.name, device_file=str(Path(src).expanduser().resolve()))


def _switch_policy(raw: dict, section: str, name: str, kind: str, host: PluginHost) -> None:
    """Switch a plugin section to ``name``, keeping only options the new plugin accepts."""
    old = raw.get(section) or {}
    if isinstance(old, str):
        old = {"name": old}
    cls = host.get(kind, name)
    accepted = {a.name for a in attrs.fields(cls.Config)} if attrs.has(cls.Config) else set()
    raw[section] = {"name": name, **{k: v for k, v in old.items() if k in accepted}}


def apply_overrides(
    raw: dict,
    *,
    scheduler: str | None = None,
    global_scheduler: str | None = None,
    settings: list[tuple[str, str]] = (),
    seed: int | None = None,
    host: PluginHost | None = None,
) -> dict:
    """Apply CLI overrides to a raw scenario mapping (returns a new mapping)."""
    host = host or get_host()
    raw = copy.deepcopy(raw)
    if scheduler:
        _switch_policy(raw, "replica_scheduler", scheduler, "replica_scheduler", host)
    if global_scheduler:
        _switch_policy(raw, "global_scheduler", global_scheduler, "global_scheduler", host)
    for key, value in settings:
        set_dotted(raw, key, parse_value(value) if isinstance(value, str) else value)
    if seed is not None:
        raw["seed"] = seed
    return raw


def _resolve_paths(raw: dict, base) -> None:
    """Make relative ``path`` keys of workload sections, and a device file, relative to the scenario file."""
    cl = raw.get("cluster")
    if isinstance(cl, dict):
        from vidur.hardware.device_file import is_device_file

        for key in ("device", "device_file"):
            v = cl.get(key)
            if isinstance(v, str) and (key == "device_file" or is_device_file(v)) and not Path(v).expanduser().is_absolute():
                cl[key] = str((Path(base) / Path(v).expanduser()).resolve())
    wl = raw.get("workload")
    if not isinstance(wl, dict):
        return
    for section in ("arrival", "lengths"):
        sec = wl.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("path"), str):
            p = Path(sec["path"]).expanduser()
            if not p.is_absolute():
                sec["path"] = str((Path(base) / p).resolve())


def load_scenario(path, *, host: PluginHost | None = None, **overrides) -> Scenario:
    """Read a scenario YAML file, apply overrides, validate.

    Relative trace paths in the file are taken relative to the file itself.
    """
    raw = load_yaml(path)
    _resolve_paths(raw, Path(path).resolve().parent)
    return scenario_from_dict(apply_overrides(raw, host=host, **overrides), host=host)
