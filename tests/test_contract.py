"""The plugin contract cannot drift (after datasette's hook tests).

Every hookspec has a docstring, is documented in CONTRIBUTING.md under a
heading that is its exact signature, and has a test here that exercises it
(marked with ``@covers_hook``). Plugin failures name the plugin and its
distribution; bad hook signatures are rejected when the plugin is loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import numpy as np
import pytest

from vidur import hookspecs
from vidur.errors import PluginError, VidurError
from vidur.hookspecs import hookimpl
from vidur.plugins import AUTOLOAD_ENV, BLOCK_ENV, PluginHost, PluginSkipped, signature_of
from vidur.scheduler.global_base import GlobalScheduler

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"
HOOKS = {name: getattr(hookspecs, name) for name in dir(hookspecs) if name.startswith("vidur_")}
TESTED: set[str] = set()


def covers_hook(*names: str):
    """Mark a test as exercising the named hooks (checked by test_every_hook_has_a_test)."""

    def mark(fn):
        TESTED.update(names)
        return fn

    return mark


# -- the contract itself ----------------------------------------------------------


def documented_signatures() -> list[str]:
    """Hook headings in CONTRIBUTING.md: ``### `vidur_x(arg, ...)` ``."""
    return re.findall(r"^### `(vidur_\w+\([^`]*\))`[ \t]*$", CONTRIBUTING.read_text(), flags=re.M)


def test_every_hook_is_documented_with_its_exact_signature():
    documented = documented_signatures()
    expected = {signature_of(spec) for spec in HOOKS.values()}
    assert len(documented) == len(set(documented)), "a hook is documented twice in CONTRIBUTING.md"
    missing = sorted(expected - set(documented))
    stale = sorted(set(documented) - expected)
    assert not missing, f"hooks not documented in CONTRIBUTING.md (add '### `sig`' headings): {missing}"
    assert not stale, f"CONTRIBUTING.md documents signatures that are not in vidur/hookspecs.py: {stale}"


def test_every_hookspec_has_a_docstring():
    bare = [name for name, spec in HOOKS.items() if not (spec.__doc__ or "").strip()]
    assert not bare, f"hookspecs without a docstring: {bare}"


def test_every_hook_has_a_test():
    untested = sorted(set(HOOKS) - TESTED)
    assert not untested, f"hooks without a test in tests/test_contract.py (mark it @covers_hook): {untested}"
    assert TESTED <= set(HOOKS), f"@covers_hook names hooks that do not exist: {sorted(TESTED - set(HOOKS))}"


def test_hooks_carry_the_prefix_and_the_project_name():
    assert hookspecs.NAME == "vidur"
    for name, spec in HOOKS.items():
        assert getattr(spec, "vidur_spec", None) is not None, f"{name} is not marked @hookspec"


# -- one test per hook -------------------------------------------------------------


def _contributing_example():
    """The FCFS plugin module shown at the top of CONTRIBUTING.md."""
    block = re.search(r"```python\n(# src/vidur_plugin_fcfs/__init__\.py\n.*?)```", CONTRIBUTING.read_text(), re.S)
    assert block, "CONTRIBUTING.md lost its example plugin"
    namespace: dict = {"__name__": "vidur_plugin_fcfs"}
    exec(compile(block.group(1), "CONTRIBUTING.md", "exec"), namespace)
    return namespace


@covers_hook("vidur_register_replica_schedulers")
def test_register_replica_schedulers_with_the_contributing_example(vidur_register, vidur_host, tiny_cluster):
    ns = _contributing_example()
    plugin = type("FCFSPlugin", (), {"vidur_register_replica_schedulers": staticmethod(
        ns["vidur_register_replica_schedulers"])})
    vidur_register(plugin, name="fcfs")
    assert vidur_host.get("replica_scheduler", "fcfs") is ns["FCFSScheduler"]
    result = tiny_cluster({"name": "fcfs", "max_batch_size": 4}, num_requests=10)
    assert all(np.isfinite(r.completion) for r in result.requests)


class _First(GlobalScheduler):
    name = "first"

    def route(self, req):
        return 0


@covers_hook("vidur_register_global_schedulers")
def test_register_global_schedulers(vidur_register, tiny_cluster):
    vidur_register(_First)
    result = tiny_cluster(global_scheduler="first", num_replicas=3, num_requests=6)
    assert {r.replica for r in result.requests} == {0}


@covers_hook("vidur_register_memory_planners")
def test_register_memory_planners(vidur_register, tiny_cluster):
    from vidur.memory.base import MemoryPlan, MemoryPlanner

    class FixedBlocks(MemoryPlanner):
        name = "fixed_blocks"

        @attrs.frozen
        class Config:
            num_blocks: int = 40

        def plan(self, model, device, tp, pp):
            return MemoryPlan(self.config.num_blocks, 16, 1, 0, 0, 0, 0)

    vidur_register(FixedBlocks)
    result = tiny_cluster(settings={"memory_planner": {"name": "fixed_blocks", "num_blocks": 77}})
    assert [r.kv_blocks for r in result.records.replicas] == [77, 77]


@covers_hook("vidur_register_runtime_estimators")
def test_register_runtime_estimators(vidur_register, tiny_cluster):
    from vidur.testing.fakes import LinearEstimator

    vidur_register(LinearEstimator)
    result = tiny_cluster(num_requests=1, output_tokens=1,
                          settings={"runtime_estimator": {"name": "linear", "base": 0.5, "per_token": 0.0,
                                                          "per_kv": 0.0, "per_pair": 0.0}})
    r = result.requests[0]
    assert result.estimator == "linear"
    assert r.first_token - r.first_scheduled == pytest.approx(0.5)


@covers_hook("vidur_register_workloads")
def test_register_workloads(vidur_register, tiny_cluster):
    from vidur.workload.base import ArrivalProcess, LengthGenerator

    class Every(ArrivalProcess):
        name = "every"

        @attrs.frozen
        class Config:
            gap: float = 1.0

        def generate(self, rng, num_requests=None, duration=None):
            return np.arange(num_requests, dtype=np.float64) * self.config.gap

    class Ramp(LengthGenerator):
        name = "ramp"

        def generate(self, rng, num_requests):
            n = np.arange(1, num_requests + 1, dtype=np.int64)
            return n * 10, n

    vidur_register(Every)
    vidur_register(Ramp)
    result = tiny_cluster(num_requests=4, settings={"workload.arrival": {"name": "every", "gap": 0.25},
                                                    "workload.lengths": {"name": "ramp"}})
    assert [r.arrival for r in result.requests] == [0.0, 0.25, 0.5, 0.75]
    assert [(r.prompt, r.output) for r in result.requests] == [(10, 1), (20, 2), (30, 3), (40, 4)]


@covers_hook("vidur_register_models")
def test_register_models(vidur_register, tiny_cluster):
    from vidur.testing.fakes import TINY_MODEL

    vidur_register(TINY_MODEL)
    result = tiny_cluster(num_requests=2, settings={"model": "test/tiny"})
    assert result.scenario.model == "test/tiny"
    assert all(np.isfinite(r.completion) for r in result.requests)


@covers_hook("vidur_register_devices")
def test_register_devices(vidur_register, vidur_host, tiny_cluster):
    from vidur.testing.fakes import TEST_DEVICE, TEST_NODE

    vidur_register(TEST_DEVICE)
    vidur_register(TEST_NODE)
    assert vidur_host.get("device", "testgpu") is TEST_DEVICE and vidur_host.get("node", "testnode") is TEST_NODE
    result = tiny_cluster(num_requests=2, settings={"cluster.device": "testgpu", "cluster.node": "testnode"})
    assert {info.device for info in result.records.replicas} == {"testgpu"}


@covers_hook("vidur_register_commands")
def test_register_commands(vidur_register, capsys):
    from vidur.cli import main

    class Hello:
        @hookimpl
        def vidur_register_commands(self, cli):
            p = cli.add_parser("hello", help="say hello")
            p.add_argument("--to", default="world")
            p.set_defaults(func=lambda args: print(f"hello {args.to}") or 3)

    vidur_register(Hello(), name="hello")
    assert main(["hello", "--to", "plugins"]) == 3
    assert capsys.readouterr().out == "hello plugins\n"


@covers_hook("vidur_simulation_start", "vidur_simulation_end")
def test_observers_are_called_once_per_run(vidur_register, tiny_cluster):
    calls = []

    class Observer:
        @hookimpl
        def vidur_simulation_start(self, sim):
            calls.append(("start", sim.scenario.replica_scheduler.name, len(sim.replica_states)))

        @hookimpl
        def vidur_simulation_end(self, sim, result):
            calls.append(("end", len(result.requests)))

    vidur_register(Observer(), name="observer")
    tiny_cluster(num_requests=5, num_replicas=2)
    assert calls == [("start", "sarathi", 2), ("end", 5)]


# -- plugin errors name the plugin and its distribution ----------------------------------

BROKEN_REGISTRAR = """
from vidur.hookspecs import hookimpl

@hookimpl
def vidur_register_replica_schedulers(register):
    raise ValueError("boom")
"""


def test_a_registrar_that_raises_names_plugin_and_distribution(vidur_distribution):
    vidur_distribution(BROKEN_REGISTRAR, name="vidur-plugin-broken", version="0.3", entry_point="broken")
    host = PluginHost(autoload=True, blocked=())
    with pytest.warns(PluginSkipped) as rec:
        assert "sarathi" in host.names("replica_scheduler")  # skipped, the rest still works
    msg = str(rec[0].message)
    assert "'broken'" in msg and "vidur-plugin-broken 0.3" in msg
    assert "vidur_register_replica_schedulers" in msg and "ValueError: boom" in msg


def test_an_in_process_plugin_that_raises_is_named(vidur_register, vidur_host):
    class Broken:
        @hookimpl
        def vidur_register_global_schedulers(self, register):
            raise KeyError("nope")

    vidur_register(Broken(), name="broken")
    with pytest.raises(PluginError, match=r"plugin 'broken' \(registered in-process\) failed in "
                                          r"vidur_register_global_schedulers: KeyError"):
        vidur_host.names("global_scheduler")


def test_an_observer_that_raises_is_named(vidur_register, tiny_cluster):
    class Broken:
        @hookimpl
        def vidur_simulation_end(self, sim, result):
            raise RuntimeError("disk full")

    vidur_register(Broken(), name="broken-observer")
    with pytest.raises(PluginError, match="'broken-observer'.*vidur_simulation_end: RuntimeError: disk full"):
        tiny_cluster(num_requests=2)


def test_a_wrong_hook_signature_is_rejected_at_load(vidur_distribution):
    vidur_distribution(
        """
        from vidur.hookspecs import hookimpl

        @hookimpl
        def vidur_register_replica_schedulers(register, replicas):
            pass
        """,
        name="vidur-plugin-badsig",
        version="1.2",
        entry_point="badsig",
    )
    with pytest.warns(PluginSkipped) as rec:
        host = PluginHost(autoload=True, blocked=())
    msg = str(rec[0].message)
    assert "\n" not in msg and "badsig" in host.skipped and host.pm.get_plugin("badsig") is None
    assert msg.startswith("plugin 'badsig' (vidur-plugin-badsig 1.2) does not match the vidur hook specs")
    assert "vidur_register_replica_schedulers(register, replicas) takes 'replicas'" in msg
    assert "the spec vidur_register_replica_schedulers(register)" in msg


def test_a_wrong_hook_signature_is_rejected_in_process(vidur_host):
    class Bad:
        @hookimpl
        def vidur_simulation_end(self, sim, result, extra):
            pass

    bad = Bad()
    with pytest.raises(PluginError, match=r"plugin 'bad' \(registered in-process\) does not match.*takes 'extra'"):
        vidur_host.register(bad, name="bad")
    assert not vidur_host.pm.is_registered(bad)


def test_a_hook_vidur_does_not_define_is_rejected(vidur_host, vidur_distribution):
    class Typo:
        @hookimpl
        def vidur_register_replica_shedulers(self, register):
            pass

    typo = Typo()
    with pytest.raises(PluginError, match="vidur_register_replica_shedulers, which is not a vidur hook "
                                          r"\(did you mean 'vidur_register_replica_schedulers'\?\)"):
        vidur_host.register(typo, name="typo")
    assert not vidur_host.pm.is_registered(typo)
    vidur_distribution(
        "from vidur.hookspecs import hookimpl\n\n@hookimpl\ndef vidur_simulation_stop(sim):\n    pass\n",
        name="vidur-plugin-typo", entry_point="typo",
    )
    with pytest.warns(PluginSkipped, match=r"'typo' \(vidur-plugin-typo 1.0\) implements vidur_simulation_stop"):
        PluginHost(autoload=True, blocked=())


def test_an_entry_point_that_fails_to_import_is_skipped_and_named(vidur_distribution):
    vidur_distribution("import vidur_no_such_dependency\n", name="vidur-plugin-missing", entry_point="missing")
    with pytest.warns(PluginSkipped, match=r"^plugin 'missing' \(vidur-plugin-missing 1.0\) failed to import "
                                           r"vidur_plugin_missing: ModuleNotFoundError.*skipped it.*"
                                           r"VIDUR_BLOCK_PLUGINS=missing$"):
        host = PluginHost(autoload=True, blocked=())
    assert "sarathi" in host.names("replica_scheduler")  # everything else still works


def test_an_entry_point_to_the_wrong_object_is_skipped(vidur_distribution, tmp_path):
    vidur_distribution("handler = 42\n", name="vidur-plugin-wrong", entry_point="wrong")
    ep = next(tmp_path.glob("vidur_plugin_wrong-*.dist-info")) / "entry_points.txt"
    ep.write_text("[vidur]\nwrong = vidur_plugin_wrong:handler\n")
    with pytest.warns(PluginSkipped, match=r"plugin 'wrong' \(vidur-plugin-wrong 1.0\): entry point "
                                           r"vidur_plugin_wrong:handler is a int with no vidur_\* hooks"):
        host = PluginHost(autoload=True, blocked=())
    assert host.pm.get_plugin("wrong") is None and host.names("global_scheduler")


def test_an_entry_point_whose_registrar_raises_is_skipped(vidur_distribution):
    vidur_distribution(
        "from vidur.hookspecs import hookimpl\n\n@hookimpl\ndef vidur_register_global_schedulers(register):\n"
        "    raise KeyError('nope')\n",
        name="vidur-plugin-raises", entry_point="raises",
    )
    host = PluginHost(autoload=True, blocked=())
    with pytest.warns(PluginSkipped, match=r"plugin 'raises' \(vidur-plugin-raises 1.0\) failed in "
                                           r"vidur_register_global_schedulers: KeyError.*skipped it"):
        names = host.names("global_scheduler")
    assert "raises" in host.skipped and names


def test_help_survives_a_broken_entry_point(vidur_distribution, capsys):
    """`vidur --help` (and every other command) works with a broken plugin installed: one warning line."""
    from vidur import cli, plugins

    vidur_distribution("import vidur_no_such_dependency\n", name="vidur-plugin-missing", entry_point="missing")
    plugins.set_host(None)
    try:
        with pytest.raises(SystemExit) as exc, pytest.warns(PluginSkipped) as rec:
            cli.main(["--help"])
    finally:
        plugins.set_host(None)
    assert exc.value.code == 0
    assert "COMMAND" in capsys.readouterr().out
    line = cli._one_line_warning(rec[0].message, rec[0].category, rec[0].filename, rec[0].lineno)
    assert line.startswith("vidur: warning: plugin 'missing' (vidur-plugin-missing 1.0)") and line.count("\n") == 1


def test_duplicate_names_are_an_error_naming_both(vidur_register, vidur_host):
    from vidur.builtin.policies.sarathi import SarathiScheduler

    class Impostor(SarathiScheduler):
        name = "sarathi"

    vidur_register(Impostor, name="impostor")
    with pytest.raises(PluginError) as exc:
        vidur_host.names("replica_scheduler")
    msg = str(exc.value)
    assert "two plugins claim the replica scheduler name 'sarathi'" in msg
    assert "'vidur.builtin.replica_schedulers' (vidur-sim" in msg and "'impostor' (registered in-process)" in msg


def test_duplicate_names_across_distributions(vidur_distribution):
    source = """
        from vidur.hookspecs import hookimpl
        from vidur.scheduler.global_base import GlobalScheduler

        class R(GlobalScheduler):
            name = "same"
            def route(self, req):
                return 0

        @hookimpl
        def vidur_register_global_schedulers(register):
            register(R)
        """
    vidur_distribution(source, name="vidur-plugin-a", version="1.0", entry_point="a")
    vidur_distribution(source, name="vidur-plugin-b", version="2.0", entry_point="b")
    host = PluginHost(autoload=True, blocked=())
    with pytest.raises(PluginError, match="name 'same'") as exc:
        host.names("global_scheduler")
    assert "vidur-plugin-a 1.0" in str(exc.value) and "vidur-plugin-b 2.0" in str(exc.value)


BOOM_POLICY = """
from vidur.builtin.policies.sarathi import SarathiScheduler
from vidur.hookspecs import hookimpl


class Boom(SarathiScheduler):
    name = "boom"

    def schedule(self):
        if self.now > 0:
            return 1 / 0
        return super().schedule()


@hookimpl
def vidur_register_replica_schedulers(register):
    register(Boom)
"""


def test_a_policy_that_raises_during_a_run_names_plugin_and_distribution(vidur_distribution, monkeypatch):
    from vidur.engine.simulation import Simulation
    from vidur.testing.helpers import tiny_scenario

    vidur_distribution(BOOM_POLICY, name="vidur-plugin-boom", version="0.9", entry_point="boom")
    host = PluginHost(autoload=True, blocked=())
    sim = Simulation(tiny_scenario("boom", host=host), host)
    with pytest.raises(PluginError) as exc:
        sim.run()
    msg = str(exc.value)
    assert msg.startswith("replica scheduler 'boom' from plugin 'boom' (vidur-plugin-boom 0.9) raised "
                          "ZeroDivisionError: division by zero in schedule() at vidur_plugin_boom.py:")
    assert isinstance(exc.value.__cause__, ZeroDivisionError)


def test_a_policy_error_is_one_line_on_the_command_line(vidur_distribution, monkeypatch, tmp_path, capsys):
    from vidur import plugins
    from vidur.cli import main

    vidur_distribution(BOOM_POLICY, name="vidur-plugin-boom", version="0.9", entry_point="boom")
    monkeypatch.setattr(plugins, "_DEFAULT", None)
    scenario = tmp_path / "s.yaml"
    scenario.write_text("model: vidur/tiny-llama\nruntime_estimator: roofline\n"
                        "workload: {num_requests: 4, lengths: {name: fixed, prompt_tokens: 8, output_tokens: 4}}\n")
    assert main(["run", str(scenario), "--scheduler", "boom", "--no-output", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "vidur: error: replica scheduler 'boom' from plugin 'boom' (vidur-plugin-boom 0.9) raised" in err
    monkeypatch.setattr(plugins, "_DEFAULT", None)


def test_a_router_or_base_helper_error_points_at_the_policy(vidur_register, tiny_cluster):
    class BadRouter(GlobalScheduler):
        name = "bad_router"

        def route(self, req):
            return {}[req.id]

    vidur_register(BadRouter)
    with pytest.raises(PluginError, match=r"global scheduler 'bad_router' from plugin 'test:bad_router' "
                                          r"\(registered in-process\) raised KeyError: 0 in route\(\)"):
        tiny_cluster(global_scheduler="bad_router")

    from vidur.builtin.policies.vllm import VLLMScheduler

    class Greedy(VLLMScheduler):  # admits a running request again: admit() refuses
        name = "greedy"

        def schedule(self):
            if self.running:
                self.admit(self.running[0], 1)
            return super().schedule()

    vidur_register(Greedy)
    with pytest.raises(PluginError, match=r"(?s)replica scheduler 'greedy' .* admit\(\) was given request 0, which is not "
                                          r"in the waiting queue in schedule\(\) at test_contract.py:\d+$"):
        tiny_cluster("greedy", num_requests=8, qps=1e6)


def test_engine_errors_that_no_policy_raised_pass_through(vidur_host, monkeypatch):
    from vidur.engine.loop import EventLoop
    from vidur.engine.simulation import Simulation
    from vidur.testing.helpers import tiny_scenario

    def broken(self):
        raise OSError("engine bug")

    monkeypatch.setattr(EventLoop, "run", broken)
    with pytest.raises(OSError, match="engine bug"):
        Simulation(tiny_scenario(host=vidur_host), vidur_host).run()


# -- blocking and autoload ----------------------------------------------------------


def test_block_plugins_blocks_a_builtin(monkeypatch):
    monkeypatch.setenv(BLOCK_ENV, "vidur.builtin.global_schedulers, vidur.builtin.commands")
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    host = PluginHost()
    assert host.names("global_scheduler") == []
    assert host.pm.is_blocked("vidur.builtin.commands")
    assert "sarathi" in host.names("replica_scheduler")
    with pytest.raises(VidurError, match="unknown global scheduler 'round_robin'; valid: none installed"):
        host.get("global_scheduler", "round_robin")


def test_block_plugins_blocks_a_third_party_plugin(vidur_distribution, monkeypatch):
    vidur_distribution(BROKEN_REGISTRAR, name="vidur-plugin-broken", entry_point="broken")
    monkeypatch.setenv(BLOCK_ENV, "broken")
    host = PluginHost(autoload=True)
    assert host.pm.get_plugin("broken") is None
    assert "sarathi" in host.names("replica_scheduler")  # the broken registrar never runs


def test_disable_autoload_skips_entry_points_but_keeps_builtins(vidur_distribution, monkeypatch):
    vidur_distribution(BROKEN_REGISTRAR, name="vidur-plugin-broken", entry_point="broken")
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    host = PluginHost()
    assert host.pm.get_plugin("broken") is None
    assert "sarathi" in host.names("replica_scheduler")
    monkeypatch.delenv(AUTOLOAD_ENV)
    assert PluginHost().pm.get_plugin("broken") is not None


def test_a_mapping_for_a_list_option_is_one_line():
    """cattrs would turn {a: 1} into the tuple ('a',): refused, naming the key."""
    import attrs as _attrs

    from vidur.config import structure

    @_attrs.frozen
    class Config:
        xs: tuple[int, ...] = ()

    with pytest.raises(VidurError, match=r"^replica_scheduler\.xs must be a list .*got a mapping"):
        structure({"xs": {"a": 1}}, Config, "replica_scheduler")
    assert structure({"xs": [1, 2]}, Config, "replica_scheduler").xs == (1, 2)


def test_a_non_attrs_config_names_the_plugin(vidur_register, vidur_host):
    from vidur.builtin.policies.sarathi import SarathiScheduler
    from vidur.scenario import scenario_from_dict

    class Plain(SarathiScheduler):
        name = "plain"

        class Config:
            pass

    class P:
        @hookimpl
        def vidur_register_replica_schedulers(self, register):
            register(Plain)

    vidur_register(P(), name="plain-plugin")
    with pytest.raises(VidurError, match=r"replica scheduler 'plain'.*not an attrs class; decorate it with @attrs.frozen"):
        scenario_from_dict({"model": "vidur/tiny-llama", "workload": {"num_requests": 2},
                            "replica_scheduler": {"name": "plain"}}, vidur_host)
