"""Calibrating the roofline on a profile of the same device, by hand (calibrate_from) and by ``auto``."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidur.errors import VidurError
from vidur.fit.roofline import calibrated_config, same_device_profile
from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
from vidur.hardware.catalog import default_node, get_device
from vidur.model.catalog import load_model

REPO = Path(__file__).resolve().parents[1]
H200 = REPO / "vidur" / "data" / "profiles" / "h200" / "meta-llama" / "Meta-Llama-3-8B"


def test_calibration_on_the_h200_profile_lowers_its_errors():
    cfg, rep = calibrated_config(H200, get_device("h200"), default_node("h200"), RooflineConfig(), RooflineEstimator)
    assert rep["model"] == "meta-llama/Meta-Llama-3-8B" and rep["device"] == "h200"
    for part in ("token_layer", "attn_prefill", "attn_decode"):
        assert rep[part]["mape_after"] < rep[part]["mape_before"], (part, rep[part])
    assert rep["token_layer"]["mape_after"] < 6.0
    assert cfg != RooflineConfig() and cfg.calibrate_from is None
    again, _ = calibrated_config(str(H200), get_device("h200"), default_node("h200"), RooflineConfig(), RooflineEstimator)
    assert again == cfg  # memoised on the profile's files


def test_calibrate_from_in_a_config_prices_another_model():
    llama2 = load_model("meta-llama/Llama-2-7b-hf")
    dev, node = get_device("h200"), default_node("h200")
    plain = RooflineEstimator(RooflineConfig(), llama2, dev, node, 1, 1)
    cal = RooflineEstimator(RooflineConfig(calibrate_from=str(H200)), llama2, dev, node, 1, 1)
    assert cal.calibration is not None and "calibrated on" in cal.describe()
    assert cal.config.compute_efficiency != plain.config.compute_efficiency
    assert cal.config.calibrate_from == str(H200)


def test_calibrate_from_rejects_another_device_and_missing_paths(tmp_path):
    llama3 = load_model("meta-llama/Meta-Llama-3-8B")
    with pytest.raises(VidurError, match="measured on 'h200', not 'h100'"):
        RooflineEstimator(RooflineConfig(calibrate_from=str(H200)), llama3, get_device("h100"), default_node("h100"), 1, 1)
    with pytest.raises(VidurError, match="not a profile directory"):
        RooflineEstimator(RooflineConfig(calibrate_from=str(tmp_path / "nope")), llama3, get_device("h200"), default_node("h200"), 1, 1)


def test_auto_calibrates_the_roofline_on_a_same_device_profile():
    from vidur.engine.simulation import Simulation
    from vidur.scenario import load_scenario

    assert same_device_profile("h200", "meta-llama/Llama-2-13b-hf") == str(H200)
    assert same_device_profile("h100", "meta-llama/Llama-2-13b-hf") is None

    def sim(device):
        sc = load_scenario(
            REPO / "scenarios" / "quickstart.yaml",
            settings=[("model", "meta-llama/Llama-2-13b-hf"), ("cluster.device", device), ("workload.num_requests", "20")],
        )
        return Simulation(sc)

    s = sim("h200")
    assert s.estimator_name == "roofline" and s.estimator.config.calibrate_from == str(H200)
    assert "calibrated on" in s.estimator.describe()
    assert sim("h100").estimator.config.calibrate_from is None


def test_estimate_command_says_it_calibrated(capsys):
    from vidur.cli import main

    assert main(["estimate", "--model", "meta-llama/Llama-2-13b-hf", "--device", "h200", "--decode", "8:512"]) == 0
    out = capsys.readouterr().out
    assert "roofline calibrated on" in out


def test_calibrating_the_roofline_on_a_device_without_datasheet_figures_is_one_line(tmp_path, capsys):
    """The CPU profile's device has no peaks to calibrate against: one line, before anything is written."""
    from tests.conftest import REPO
    from vidur.cli import main

    out = tmp_path / "fitted.json"
    prof = REPO / "vidur" / "data" / "profiles" / "cpu" / "vidur" / "tiny-llama"
    assert main(["fit", str(prof), "--calibrate-roofline", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--calibrate-roofline fits efficiencies against a device's datasheet peaks" in err
    assert "'cpu'" in err and err.count("\n") == 1 and not out.exists()
