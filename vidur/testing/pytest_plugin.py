"""pytest plugin shipped with vidur: fixtures for testing vidur plugins.

Loaded through the ``pytest11`` entry point, so it is imported by every
pytest run in an environment where vidur is installed. It therefore only
defines fixtures: no hooks, no options, no imports beyond pytest until a
fixture is actually used.

Fixtures
--------
``vidur_host``        a fresh :class:`~vidur.plugins.PluginHost` with the built-ins
                      only (no entry points, nothing blocked), installed as the
                      process default for the test (``vidur.cli.main`` and
                      ``Simulation`` see it); the previous default is restored.
``vidur_register``    ``vidur_register(plugin_or_class, name=None)`` registers a
                      plugin on ``vidur_host`` for this test only.
``replica_harness``   ``replica_harness(SchedulerCls | "name", config=None, **kw)``
                      returns a :class:`~vidur.testing.harness.ReplicaHarness`.
``cluster_harness``   ``cluster_harness(RouterCls | "name", config=None, **kw)``
                      returns a :class:`~vidur.testing.harness.ClusterHarness`.
``make_request``      ``make_request(prompt=16, output=4, arrival=0.0)`` returns a
                      fresh :class:`~vidur.entities.request.Request` (ids 0, 1, ...).
``tiny_cluster``      ``tiny_cluster(scheduler="sarathi", **kw)`` simulates a few
                      requests of ``vidur/tiny-llama`` on a small cluster and
                      returns the :class:`~vidur.engine.simulation.SimulationResult`.
``vidur_seed``        the seed the other fixtures use (0); override it in a conftest.
``vidur_rng``         ``numpy.random.default_rng(vidur_seed)``.
``vidur_distribution`` writes an installed-looking distribution with ``vidur``
                      entry points to a temporary directory on ``sys.path``, to
                      test plugin loading without pip.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def vidur_seed() -> int:
    """The seed of ``vidur_rng`` and ``tiny_cluster``; override to change it."""
    return 0


@pytest.fixture
def vidur_rng(vidur_seed):
    """A seeded ``numpy.random.Generator`` (fresh for each test)."""
    import numpy as np

    return np.random.default_rng(vidur_seed)


@pytest.fixture
def vidur_host():
    """A fresh plugin host with only the built-ins, the process default for this test."""
    from vidur import plugins

    previous = plugins._DEFAULT
    host = plugins.PluginHost(autoload=False, blocked=())
    plugins.set_host(host)
    try:
        yield host
    finally:
        plugins.set_host(previous)


@pytest.fixture
def vidur_register(vidur_host):
    """``vidur_register(plugin, name=None)``: register a plugin for this test only.

    ``plugin`` is a module or object with ``@hookimpl`` functions, or a class
    to register directly (a replica or global scheduler, memory planner,
    runtime estimator, arrival process or length generator), which is wrapped
    in a one-hook plugin. Returns the registered plugin object.
    """
    from vidur.testing.helpers import as_plugin, plugin_name

    added = []

    def register(plugin, name: str | None = None):
        plugin = as_plugin(plugin)
        vidur_host.register(plugin, name=name or plugin_name(plugin))
        added.append(plugin)
        return plugin

    yield register
    for plugin in reversed(added):
        if vidur_host.pm.is_registered(plugin):
            vidur_host.unregister(plugin)


def _lookup(host, kind: str, cls):
    return host.get(kind, cls) if isinstance(cls, str) else cls


def _config(cls, config):
    if isinstance(config, dict):
        return cls.Config(**config)
    return config


@pytest.fixture
def replica_harness(vidur_host):
    """``replica_harness(scheduler, config=None, **kw)`` -> ReplicaHarness.

    ``scheduler`` is a class or a registered name; ``config`` a Config
    instance or a dict of its fields; ``kw`` go to ReplicaHarness
    (``num_blocks``, ``block_size``, ``fast_forward``, ``on_batch``, ...).
    """
    from vidur.testing.harness import ReplicaHarness

    def make(scheduler, config=None, **kw):
        cls = _lookup(vidur_host, "replica_scheduler", scheduler)
        return ReplicaHarness(cls, _config(cls, config), **kw)

    return make


@pytest.fixture
def cluster_harness(vidur_host, vidur_seed):
    """``cluster_harness(router, config=None, **kw)`` -> ClusterHarness (seeded
    with ``vidur_seed``); ``scheduler_cls`` may be a registered name too."""
    from vidur.testing.harness import ClusterHarness

    def make(router, config=None, **kw):
        cls = _lookup(vidur_host, "global_scheduler", router)
        if "scheduler_cls" in kw:
            kw["scheduler_cls"] = _lookup(vidur_host, "replica_scheduler", kw["scheduler_cls"])
            if isinstance(kw.get("scheduler_config"), dict):
                kw["scheduler_config"] = kw["scheduler_cls"].Config(**kw["scheduler_config"])
        kw.setdefault("seed", vidur_seed)
        return ClusterHarness(cls, _config(cls, config), **kw)

    return make


@pytest.fixture
def make_request():
    """``make_request(prompt=16, output=4, arrival=0.0)`` -> a fresh Request;
    ids count up from 0 within the test."""
    from vidur.entities.request import Request

    counter = iter(range(1 << 62))

    def make(prompt: int = 16, output: int = 4, arrival: float = 0.0):
        return Request(next(counter), float(arrival), int(prompt), int(output))

    return make


@pytest.fixture
def tiny_cluster(vidur_host, vidur_seed):
    """``tiny_cluster(scheduler="sarathi", **kw)`` -> SimulationResult.

    Builds :func:`vidur.testing.helpers.tiny_scenario` (``vidur/tiny-llama``
    on H100s, roofline estimator, two replicas, fixed lengths) with ``kw`` and
    runs it on ``vidur_host`` (so plugins registered with ``vidur_register``
    are available by name). ``step_mode=True`` disables fast-forward.
    """
    from vidur.engine.simulation import Simulation
    from vidur.testing.helpers import tiny_scenario

    def run(scheduler="sarathi", *, step_mode: bool = False, requests=None, **kw):
        kw.setdefault("seed", vidur_seed)
        scenario = tiny_scenario(scheduler, host=vidur_host, **kw)
        if requests is not None and hasattr(requests, "to_table"):
            requests = requests.to_table()
        return Simulation(scenario, vidur_host, requests=requests).run(step_mode=step_mode, progress=False)

    return run


@pytest.fixture
def vidur_distribution(tmp_path, monkeypatch):
    """``vidur_distribution(source, name="vidur-plugin-test", version="1.0",
    entry_point="test")`` -> module name.

    Writes ``source`` as a module plus a ``*.dist-info`` declaring it under the
    ``vidur`` entry-point group, in a temporary directory put on ``sys.path``
    for this test: a fresh ``PluginHost()`` then loads it exactly as it loads
    a pip-installed plugin.
    """
    import sys

    from vidur.testing.helpers import write_distribution

    made = []

    def make(source: str, name: str = "vidur-plugin-test", version: str = "1.0", entry_point: str = "test"):
        module = write_distribution(tmp_path, source, name=name, version=version, entry_point=entry_point)
        made.append(module)
        return module

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for module in made:
        sys.modules.pop(module, None)
