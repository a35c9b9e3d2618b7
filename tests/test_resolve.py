"""One resolver for the estimator and the device (vidur.resolve): auto, plugin estimators taking part in
auto, calibration files, engine modes, the provenance record in every output, and no global state."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from vidur.errors import VidurError
from vidur.estimate.base import Offer, PricingTarget
from vidur.scenario import scenario_from_dict
from vidur.store.calibrations import Calibration, find_calibration, write_calibration
from vidur.testing.fakes import LinearConfig, LinearEstimator

REPO = Path(__file__).resolve().parents[1]


class MeasuredLinear(LinearEstimator):
    """A plugin estimator that takes part in ``auto``: it has data for h100 only."""

    name = "measured_linear"
    auto_priority = 200

    @classmethod
    def can_price(cls, target: PricingTarget) -> Offer:
        if target.device.name != "h100":
            return Offer.decline(f"no measurements on {target.device.name}")
        return Offer.accept(LinearConfig(base=2e-3), "measured on h100", source="/data/measured-h100.json")


def _scenario(device="h100", estimator="auto", **cluster):
    raw = {
        "model": "meta-llama/Meta-Llama-3-8B",
        "cluster": {"device": device, **cluster},
        "runtime_estimator": estimator,
        "workload": {"num_requests": 20, "lengths": {"name": "fixed", "prompt_tokens": 64, "output_tokens": 4}},
    }
    return raw


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user profiles or calibrations but the test's own."""
    monkeypatch.delenv("VIDUR_PROFILE_PATH", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VIDUR_CALIBRATION_PATH", str(tmp_path / "calibrations"))
    return tmp_path


def test_a_plugin_estimator_takes_part_in_auto(vidur_host, vidur_register, isolated):
    from vidur.engine.simulation import Simulation

    vidur_register(MeasuredLinear)
    sim = Simulation(scenario_from_dict(_scenario("h100"), vidur_host), vidur_host)
    assert sim.estimator_name == "measured_linear" and sim.estimator.config.base == 2e-3
    assert sim.provenance.reason == "measured on h100" and sim.provenance.source == "/data/measured-h100.json"
    # on another device it declines, and auto falls back to the built-ins, naming why
    sim = Simulation(scenario_from_dict(_scenario("a100"), vidur_host), vidur_host)
    assert sim.estimator_name == "roofline"
    assert sim.provenance.skipped[0] == "measured_linear: no measurements on a100"


def test_can_price_must_return_an_offer(vidur_host, vidur_register, isolated):
    from vidur.engine.simulation import Simulation

    class Broken(LinearEstimator):
        name = "broken_auto"
        auto_priority = 300

        @classmethod
        def can_price(cls, target):
            return True

    vidur_register(Broken)
    with pytest.raises(VidurError, match="runtime estimator 'broken_auto' from plugin .*: can_price\\(\\) must return a vidur.estimate.base.Offer"):
        Simulation(scenario_from_dict(_scenario(), vidur_host), vidur_host)

    class Raising(LinearEstimator):
        name = "raising_auto"
        auto_priority = 400

        @classmethod
        def can_price(cls, target):
            raise KeyError("tables")

    vidur_register(Raising)
    with pytest.raises(VidurError, match="runtime estimator 'raising_auto' from plugin .* raised KeyError: 'tables' in can_price"):
        Simulation(scenario_from_dict(_scenario(), vidur_host), vidur_host)


def test_a_calibration_file_is_applied_under_auto_and_named(vidur_host, isolated):
    from vidur.engine.simulation import Simulation

    cal = Calibration("roofline", "h100", {"compute_efficiency": 0.5, "cpu_base_s": 0.004}, model="meta-llama/Meta-Llama-3-8B",
                      fitted_from="vLLM runs (test)")
    path = write_calibration(isolated / "calibrations" / "h100-llama3.json", cal)
    wide = write_calibration(isolated / "calibrations" / "h100.json", Calibration("roofline", "h100", {"compute_efficiency": 0.9}))
    assert find_calibration("roofline", "h100", "meta-llama/Meta-Llama-3-8B", 1).path == str(path)  # more specific wins
    assert find_calibration("roofline", "h100", "other/model", 1).path == str(wide)
    assert find_calibration("profile", "h100", "meta-llama/Meta-Llama-3-8B", 1) is None
    sim = Simulation(scenario_from_dict(_scenario("h100"), vidur_host), vidur_host)
    assert sim.estimator.config.compute_efficiency == 0.5 and sim.estimator.config.cpu_base_s == 0.004
    prov = sim.provenance
    assert prov.calibration == str(path) and prov.fitted_from == "vLLM runs (test)"
    assert f"calibration {path}" in prov.header()
    # a scenario that names its estimator gets exactly the options it wrote
    named = Simulation(scenario_from_dict(_scenario("h100", "roofline"), vidur_host), vidur_host)
    assert named.estimator.config.compute_efficiency != 0.5 and named.provenance.calibration is None


def test_a_calibration_with_a_bad_value_is_one_line(vidur_host, isolated):
    from vidur.engine.simulation import Simulation

    write_calibration(isolated / "calibrations" / "bad.json", Calibration("roofline", "h100", {"compute_efficiency": "fast"}))
    with pytest.raises(VidurError) as exc:
        Simulation(scenario_from_dict(_scenario("h100"), vidur_host), vidur_host)
    assert "bad.json" in str(exc.value) and "\n" not in str(exc.value)


def test_engine_mode_goes_into_the_estimator_and_the_provenance(vidur_host, isolated):
    from vidur.engine.simulation import Simulation

    sim = Simulation(scenario_from_dict(_scenario("h100", engine_mode="eager"), vidur_host), vidur_host)
    assert sim.estimator.config.engine_mode == "eager"
    assert sim.provenance.engine_mode == "eager" and sim.provenance.engine_mode_reason == "cluster.engine_mode"


def test_an_explicit_estimator_engine_mode_replaced_is_said(vidur_host, isolated):
    from vidur.engine.simulation import Simulation

    raw = _scenario("h100", engine_mode="eager")
    raw["runtime_estimator"] = {"name": "roofline", "engine_mode": "cuda_graphs"}
    sim = Simulation(scenario_from_dict(raw, vidur_host), vidur_host)
    assert sim.estimator.config.engine_mode == "eager"
    assert "replaced runtime_estimator.engine_mode cuda_graphs" not in sim.provenance.header()  # that is the default
    raw["cluster"]["engine_mode"] = "cuda_graphs"
    raw["runtime_estimator"]["engine_mode"] = "eager"
    sim = Simulation(scenario_from_dict(raw, vidur_host), vidur_host)
    assert "engine mode cuda_graphs (cluster.engine_mode; replaced runtime_estimator.engine_mode eager)" in \
        sim.provenance.header()


def test_engine_mode_for_an_estimator_without_one_is_refused(vidur_host, vidur_register, isolated):
    from vidur.engine.simulation import Simulation

    vidur_register(MeasuredLinear)
    with pytest.raises(VidurError, match="cluster.engine_mode is set but the 'measured_linear' estimator has no engine mode"):
        Simulation(scenario_from_dict(_scenario("h100", "measured_linear", engine_mode="eager"), vidur_host), vidur_host)


def test_run_and_search_store_the_provenance(tmp_path, isolated):
    from vidur.cli import main

    out = tmp_path / "run"
    assert main(["run", str(REPO / "scenarios" / "quickstart.yaml"), "--out", str(out), "--no-progress",
                 "-s", "workload.num_requests", "30", "-s", "cluster.device", "h200"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["estimator"] == "profile" and prov["requested"] == "auto" and prov["source_root"] == "shipped with vidur"
    assert summary["run"]["estimator_source"] == prov["source"]

    from vidur.search.driver import _table_row
    from vidur.search.spec import load_search_spec

    spec = load_search_spec(REPO / "scenarios" / "search-small.yaml")
    row = _table_row(spec, spec.configs[0], {"status": "ok", "provenance": prov})
    assert row["estimator"] == "profile" and row["estimator_source"] == prov["source"]


def test_estimate_reports_the_provenance(capsys, isolated):
    from vidur.cli import main

    assert main(["estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h200", "--decode", "8:512", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["provenance"]["estimator"] == "profile" and res["provenance"]["source"].endswith("Meta-Llama-3-8B")


def test_the_core_imports_no_built_in_estimator():
    """The engine, the resolver, search and validate reach estimators only through the plugin host."""
    import grimp

    graph = grimp.build_graph("vidur", cache_dir=None)
    for core in ("vidur.engine", "vidur.resolve", "vidur.search", "vidur.validate", "vidur.scenario"):
        for builtin in ("vidur.estimate.roofline", "vidur.estimate.profile_estimator"):
            assert not graph.chain_exists(importer=core, imported=builtin, as_packages=True), (core, builtin)


def test_resolution_registers_nothing(vidur_host, isolated, tmp_path):
    """A profile-only device (cpu) and a device file are resolved for one simulation, not registered."""
    from vidur.engine.simulation import Simulation

    before = {k: sorted(v) for k, v in vidur_host.registries.items()}
    raw = _scenario("cpu")
    raw["model"] = "vidur/tiny-llama"
    sim = Simulation(scenario_from_dict(raw, vidur_host), vidur_host)
    assert sim.device.name == "cpu" and sim.provenance.device_source.startswith("known only from its profile")
    assert {k: sorted(v) for k, v in vidur_host.registries.items()} == before
    assert attrs.asdict(sim.provenance)["device"] == "cpu"


def test_a_named_estimator_reports_the_data_it_found(vidur_host, isolated):
    """`runtime_estimator: profile` finds its profile itself; the provenance still names it."""
    from vidur.engine.simulation import Simulation
    from vidur.store.profiles import SHIPPED_PROFILES

    raw = _scenario("h200", "profile")
    sim = Simulation(scenario_from_dict(raw, vidur_host), vidur_host)
    prov = sim.provenance
    assert prov.requested == "profile" and prov.reason == "named by the scenario"
    assert prov.source == str(SHIPPED_PROFILES / "h200" / "meta-llama" / "Meta-Llama-3-8B")
    assert prov.source_root == "shipped with vidur"
