"""PluginHost mechanics: built-ins, entry points, register/unregister, lookups."""

from __future__ import annotations

import pytest

from vidur import __version__, plugins
from vidur.errors import PluginError, VidurError
from vidur.hookspecs import hookimpl
from vidur.plugins import AUTOLOAD_ENV, BLOCK_ENV, BUILTIN_PLUGINS, PluginHost
from vidur.scheduler.global_base import GlobalScheduler


class Zero(GlobalScheduler):
    name = "zero"

    def route(self, req):
        return 0


ZERO_PLUGIN = """
from vidur.hookspecs import hookimpl
from vidur.scheduler.global_base import GlobalScheduler

class Zero(GlobalScheduler):
    name = "zero"
    def route(self, req):
        return 0

@hookimpl
def vidur_register_global_schedulers(register):
    register(Zero)
"""


def test_builtins_are_plugins_named_by_module(vidur_host):
    names = [vidur_host.pm.get_name(p) for p in vidur_host.pm.get_plugins()]
    assert sorted(names) == sorted(BUILTIN_PLUGINS)
    entry = vidur_host.entry("replica_scheduler", "vllm")
    assert entry.plugin == "vidur.builtin.replica_schedulers"
    assert entry.distribution == f"vidur-sim {__version__}"


def test_register_and_unregister_refresh_the_registries(vidur_host):
    assert "zero" not in vidur_host.names("global_scheduler")

    class Plugin:
        @hookimpl
        def vidur_register_global_schedulers(self, register):
            register(Zero)

    plugin = Plugin()
    vidur_host.register(plugin, name="zero-plugin")
    assert vidur_host.get("global_scheduler", "zero") is Zero
    assert vidur_host.distribution_of(plugin) == "registered in-process"
    vidur_host.unregister(name="zero-plugin")
    assert "zero" not in vidur_host.names("global_scheduler")


def test_registering_one_name_twice_is_an_error(vidur_host):
    class A:
        pass

    vidur_host.register(A(), name="same")
    with pytest.raises(PluginError, match="cannot register plugin 'same'"):
        vidur_host.register(A(), name="same")


def test_a_registered_thing_needs_a_name(vidur_host):
    class Nameless(GlobalScheduler):
        pass

    class Plugin:
        @hookimpl
        def vidur_register_global_schedulers(self, register):
            register(Nameless)

    vidur_host.register(Plugin(), name="nameless")
    with pytest.raises(PluginError, match=r"plugin 'nameless' \(registered in-process\) registered a global_scheduler without a 'name'"):
        vidur_host.names("global_scheduler")


def test_unknown_names_list_the_valid_ones_and_suggest(vidur_host):
    with pytest.raises(VidurError, match=r"unknown replica scheduler 'sarath' \(did you mean 'sarathi'\?\); valid: .*vllm"):
        vidur_host.get("replica_scheduler", "sarath")


def test_entry_points_load_with_their_distribution(vidur_distribution):
    vidur_distribution(ZERO_PLUGIN, name="vidur-plugin-zero", version="3.1", entry_point="zero")
    host = PluginHost(autoload=True, blocked=())
    plugin = host.pm.get_plugin("zero")
    assert plugin is not None and host.distribution_of(plugin) == "vidur-plugin-zero 3.1"
    entry = host.entry("global_scheduler", "zero")
    assert (entry.plugin, entry.distribution) == ("zero", "vidur-plugin-zero 3.1")


def test_explicit_arguments_override_the_environment(vidur_distribution, monkeypatch):
    vidur_distribution(ZERO_PLUGIN, name="vidur-plugin-zero", entry_point="zero")
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    monkeypatch.setenv(BLOCK_ENV, "vidur.builtin.replica_schedulers")
    host = PluginHost(autoload=True, blocked=())
    assert host.pm.get_plugin("zero") is not None
    assert "vllm" in host.names("replica_scheduler")
    host = PluginHost(autoload=False)
    assert host.pm.get_plugin("zero") is None and host.names("replica_scheduler") == []


def test_vidur_plugins_lists_entry_points_and_their_distribution(vidur_distribution, monkeypatch, capsys):
    from vidur.cli import main

    vidur_distribution(ZERO_PLUGIN, name="vidur-plugin-zero", version="3.1", entry_point="zero")
    monkeypatch.setattr(plugins, "_DEFAULT", None)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "zero  [vidur-plugin-zero 3.1]" in out
    assert "vidur.builtin.replica_schedulers  [vidur-sim" in out
    lines = out.splitlines()
    i = lines.index("zero  [vidur-plugin-zero 3.1]")
    assert lines[i + 1].split() == ["global_scheduler", "zero"]
    monkeypatch.setattr(plugins, "_DEFAULT", None)


def test_vidur_plugins_lists_in_process_plugins(vidur_register, capsys):
    from vidur.cli import main

    vidur_register(Zero)
    assert main(["plugins"]) == 0
    assert "test:zero  [registered in-process]" in capsys.readouterr().out


def test_observers_get_only_the_arguments_they_name(vidur_host):
    got = []

    class Plugin:
        @hookimpl
        def vidur_simulation_end(self, result):
            got.append(result)

    vidur_host.register(Plugin(), name="p")
    vidur_host.call_observer("vidur_simulation_end", sim=object(), result="R")
    assert got == ["R"]


def test_default_host_is_built_once_and_can_be_reset(monkeypatch):
    monkeypatch.setattr(plugins, "_DEFAULT", None)
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    a = plugins.get_host()
    assert plugins.get_host() is a
    plugins.set_host(None)
    assert plugins.get_host() is not a


def test_plugin_failing_while_setting_up_is_named(tmp_path):
    """A plugin object that raises while the simulation is built is named with its plugin."""
    from vidur.engine.simulation import Simulation
    from vidur.errors import PluginError
    from vidur.memory.paged import PagedMemoryPlanner
    from vidur.hookspecs import hookimpl
    from vidur.plugins import PluginHost
    from vidur.scenario import load_scenario
    from tests.conftest import SCENARIOS

    class Boom(PagedMemoryPlanner):
        name = "boom"

        def plan(self, *args):
            return 1 / 0

    class Plugin:
        @hookimpl
        def vidur_register_memory_planners(self, register):
            register(Boom)

    host = PluginHost(autoload=False)
    host.register(Plugin(), name="boomplug")
    sc = load_scenario(SCENARIOS / "quickstart.yaml", host=host, settings=[("memory_planner", "boom")])
    with pytest.raises(PluginError, match=r"memory planner 'boom' from plugin 'boomplug'.*ZeroDivisionError"):
        Simulation(sc, host)
