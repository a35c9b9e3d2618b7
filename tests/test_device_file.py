"""Devices described in a file (vidur.hardware.device_file): scenarios, estimate, search, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vidur.errors import VidurError
from vidur.hardware.catalog import default_node
from vidur.hardware.device_file import load_device_file
from vidur.resolve.device import resolve_device
from vidur.plugins import PluginHost

REPO = Path(__file__).resolve().parents[1]

MI300X = {
    "name": "mi300x_test",
    "memory_gb": 192,
    "peak_tflops": 1307,
    "memory_bandwidth_gbps": 5300,
    "price_per_hour": 3.0,
    "node": "pcie_8",
}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_device_file_becomes_a_device_spec(tmp_path):
    spec = load_device_file(write(tmp_path / "d.yaml", MI300X))
    assert spec.name == "mi300x_test"
    assert spec.memory_bytes == 192_000_000_000 and spec.peak_flops == 1.307e15 and spec.memory_bandwidth == 5.3e12
    assert spec.price_per_hour == 3.0 and "d.yaml" in spec.price_source
    assert default_node("mi300x_test").name == "pcie_8"
    host = PluginHost(autoload=False)
    dev = resolve_device(str(tmp_path / "d.yaml"), host)
    assert dev.spec == spec and dev.node.name == "pcie_8" and dev.source.startswith("device file ")
    assert "mi300x_test" not in host.names("device")  # resolving registers nothing


def test_a_device_files_node_applies_to_that_device_only(tmp_path):
    host = PluginHost(autoload=False)
    dev = resolve_device(str(write(tmp_path / "d.yaml", {**MI300X, "node": "dgx_h100"})), host)
    assert dev.node.name == "dgx_h100"
    assert default_node("mi300x_test").name == "pcie_8"  # no process-wide node table


@pytest.mark.parametrize(
    "change,message",
    [
        ({"memroy_gb": 1}, "unknown key 'memroy_gb'.*memory_gb"),
        ({"peak_tflops": None}, "peak_tflops must be a positive number"),
        ({"memory_bandwidth_gbps": -5}, "memory_bandwidth_gbps must be a positive number"),
        ({"node": "dgx_mi300"}, "unknown node 'dgx_mi300'"),
        ({"name": "a/b"}, "name must be a short device name"),
    ],
)
def test_bad_device_files_fail_in_one_line(tmp_path, change, message):
    data = {**MI300X, **change}
    with pytest.raises(VidurError, match=message):
        load_device_file(write(tmp_path / "d.yaml", data))


def test_missing_key_and_missing_file(tmp_path):
    data = {k: v for k, v in MI300X.items() if k != "peak_tflops"}
    with pytest.raises(VidurError, match="missing 'peak_tflops'"):
        load_device_file(write(tmp_path / "d.yaml", data))
    with pytest.raises(VidurError, match="file not found"):
        load_device_file(tmp_path / "nope.yaml")


def test_a_file_may_not_redefine_a_registered_device(tmp_path):
    host = PluginHost(autoload=False)
    with pytest.raises(VidurError, match="already registered with other figures"):
        resolve_device(str(write(tmp_path / "h.yaml", {**MI300X, "name": "h100"})), host)


def test_scenario_with_a_device_file_runs_and_carries_it(tmp_path):
    from vidur.engine.simulation import Simulation
    from vidur.scenario import load_scenario, scenario_from_dict

    write(tmp_path / "gpu.yaml", MI300X)
    raw = yaml.safe_load((REPO / "scenarios" / "quickstart.yaml").read_text())
    raw["cluster"]["device"] = "gpu.yaml"  # relative to the scenario file
    raw["workload"]["num_requests"] = 30
    write(tmp_path / "s.yaml", raw)
    sc = load_scenario(tmp_path / "s.yaml")
    assert sc.cluster.device == "mi300x_test" and sc.cluster.device_file == str((tmp_path / "gpu.yaml").resolve())
    host = PluginHost(autoload=False)
    before = set(host.names("device"))
    res = Simulation(sc, host).run(progress=False)
    assert len(res.requests) == 30
    assert res.provenance.device == "mi300x_test" and res.provenance.device_source.startswith("device file ")
    assert set(host.names("device")) == before  # loading and running the scenario changed no global state
    # what a worker process does: rebuild from the dict with a host that never saw the file
    again = scenario_from_dict(sc.to_dict(), PluginHost(autoload=False))
    assert again.cluster == sc.cluster


def test_estimate_and_run_take_a_device_file(tmp_path, capsys):
    from vidur.cli import main

    f = write(tmp_path / "gpu.yaml", MI300X)
    assert main(["estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", str(f), "--decode", "8:512"]) == 0
    assert "mi300x_test" in capsys.readouterr().out
    bad = write(tmp_path / "bad.yaml", {**MI300X, "peak_tflops": 0})
    assert main(["estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", str(bad), "--decode", "8:512"]) == 2
    err = capsys.readouterr().err
    assert "peak_tflops must be a positive number" in err and "Traceback" not in err


def test_search_grid_takes_device_files(tmp_path):
    from vidur.search.spec import load_search_spec

    write(tmp_path / "gpu.yaml", MI300X)
    raw = yaml.safe_load((REPO / "scenarios" / "search-small.yaml").read_text())
    raw["grid"]["devices"] = ["h100", "gpu.yaml"]
    raw["grid"]["tensor_parallel"] = [1]
    spec = load_search_spec(write(tmp_path / "s.yaml", raw))
    assert {c.device for c in spec.configs} == {"h100", "mi300x_test"}
    assert spec.prices["mi300x_test"] == 3.0
    cfg = next(c for c in spec.configs if c.device == "mi300x_test")
    assert spec.base_scenario(cfg)["cluster"]["device_file"] == str((tmp_path / "gpu.yaml").resolve())


def test_a_device_file_may_carry_its_memory_efficiency(tmp_path):
    from vidur.estimate.roofline import DEFAULT_MEMORY_EFFICIENCY, RooflineConfig

    gddr = load_device_file(write(tmp_path / "g.yaml", {**MI300X, "memory_efficiency": 0.95}))
    plain = load_device_file(write(tmp_path / "p.yaml", MI300X))
    assert RooflineConfig().for_device(gddr).memory_efficiency == 0.95
    assert RooflineConfig().for_device(plain).memory_efficiency == DEFAULT_MEMORY_EFFICIENCY
    assert RooflineConfig(memory_efficiency=0.6).for_device(gddr).memory_efficiency == 0.6  # the scenario wins
    for bad in (0, 1.5, "high", True):
        with pytest.raises(VidurError, match="memory_efficiency must be a fraction in"):
            load_device_file(write(tmp_path / "b.yaml", {**MI300X, "memory_efficiency": bad}))
