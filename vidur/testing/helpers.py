"""Small helpers behind the pytest fixtures, usable without pytest."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path
from typing import Any

#: base class (module, name) -> the registrar hook that registers its subclasses
_REGISTRARS = (
    ("vidur.scheduler.base", "ReplicaScheduler", "vidur_register_replica_schedulers"),
    ("vidur.scheduler.global_base", "GlobalScheduler", "vidur_register_global_schedulers"),
    ("vidur.memory.base", "MemoryPlanner", "vidur_register_memory_planners"),
    ("vidur.estimate.base", "RuntimeEstimator", "vidur_register_runtime_estimators"),
    ("vidur.workload.base", "ArrivalProcess", "vidur_register_workloads"),
    ("vidur.workload.base", "LengthGenerator", "vidur_register_workloads"),
    ("vidur.model.spec", "ModelSpec", "vidur_register_models"),
    ("vidur.hardware.spec", "DeviceSpec", "vidur_register_devices"),
    ("vidur.hardware.spec", "NodeSpec", "vidur_register_devices"),
)


def registrar_for(obj: Any) -> str | None:
    """The registrar hook that registers ``obj`` (a policy class or a model /
    device spec), or None if ``obj`` is not something a registrar takes."""
    for module, name, hook in _REGISTRARS:
        base = getattr(importlib.import_module(module), name)
        if (isinstance(obj, type) and issubclass(obj, base)) or isinstance(obj, base):
            return hook
    return None


def as_plugin(obj: Any) -> Any:
    """``obj`` itself if it is a plugin (module or object with hook
    implementations); a class or spec is wrapped in a one-hook plugin that
    registers it, named ``test:<name>``."""
    hook = registrar_for(obj)
    if hook is None:
        return obj
    from vidur.hookspecs import hookimpl

    def impl(register):
        register(obj)

    impl.__name__ = hook
    label = getattr(obj, "name", None) or getattr(obj, "__name__", "plugin")
    plugin = _Wrapped()
    setattr(plugin, hook, hookimpl(impl))
    plugin.__name__ = f"test:{label}"
    plugin.registers = obj
    return plugin


class _Wrapped:
    """A plugin made by :func:`as_plugin`: one registrar hook for one object."""

    def __repr__(self) -> str:
        return f"<plugin {self.__name__}>"


def plugin_name(plugin: Any) -> str | None:
    """A readable registration name: a module's name, a wrapped class's ``test:<name>``."""
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else None


def tiny_scenario(
    scheduler: Any = "sarathi",
    *,
    global_scheduler: Any = "round_robin",
    num_replicas: int = 2,
    num_requests: int = 16,
    prompt_tokens: int = 64,
    output_tokens: int = 8,
    qps: float = 100.0,
    seed: int = 0,
    device: str = "h100",
    settings: dict[str, Any] | None = None,
    host=None,
):
    """A small, fast :class:`~vidur.scenario.Scenario`: ``vidur/tiny-llama``
    on ``num_replicas`` ``device`` replicas (TP1), the roofline estimator,
    Poisson arrivals at ``qps`` and fixed lengths, no progress bar.

    ``scheduler`` / ``global_scheduler`` are a registered name, a class with
    a ``name``, or a scenario section (``{"name": "sarathi", "chunk_size": 64}``);
    ``settings`` maps dotted keys to values (``{"simulation.max_time": 1.0}``).
    """
    from vidur.config import set_dotted
    from vidur.scenario import scenario_from_dict

    def section(x):
        if isinstance(x, dict):
            return dict(x)
        return {"name": x if isinstance(x, str) else x.name}

    raw = {
        "model": "vidur/tiny-llama",
        "seed": seed,
        "cluster": {"device": device, "num_replicas": num_replicas},
        "replica_scheduler": section(scheduler),
        "global_scheduler": section(global_scheduler),
        "runtime_estimator": "roofline",
        "workload": {
            "num_requests": num_requests,
            "arrival": {"name": "poisson", "qps": qps},
            "lengths": {"name": "fixed", "prompt_tokens": prompt_tokens, "output_tokens": output_tokens},
        },
        "simulation": {"progress": False},
    }
    for key, value in (settings or {}).items():
        set_dotted(raw, key, value)
    return scenario_from_dict(raw, host)


def write_distribution(
    root: str | Path,
    source: str,
    *,
    name: str = "vidur-plugin-test",
    version: str = "1.0",
    entry_point: str = "test",
) -> str:
    """Write module ``source`` and a ``*.dist-info`` declaring it as the
    ``vidur`` entry point ``entry_point`` of distribution ``name`` under
    ``root``; with ``root`` on ``sys.path`` it looks pip-installed. Returns
    the module name."""
    root = Path(root)
    module = re.sub(r"\W", "_", name).lower()
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nClassifier: Framework :: vidur\n"
    )
    (info / "entry_points.txt").write_text(f"[vidur]\n{entry_point} = {module}\n")
    importlib.invalidate_caches()
    return module
