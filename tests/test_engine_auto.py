"""``runtime_estimator: auto`` for policies that model a serving engine (vLLM V1, SGLang): the shipped
profiles time vidur's reference executor (PyTorch's unfused operators), not the engine's kernels, so
auto takes the roofline with its default efficiencies (which model the engine) for them, and keeps
the profile for batching policies on any kernels and for devices known only from a profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vidur.engine.simulation import Simulation
from vidur.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
H200_8B = ROOT / "vidur" / "data" / "profiles" / "h200" / "meta-llama" / "Meta-Llama-3-8B"


def sim(scheduler: str, model: str = "meta-llama/Meta-Llama-3-8B", device: str = "h200", estimator: str | None = None):
    settings = [("model", model), ("cluster.device", device), ("workload.num_requests", "10"),
                ("workload.lengths.max_tokens", "1024"), ("replica_scheduler", scheduler)]
    if estimator:
        settings.append(("runtime_estimator", estimator))
    return Simulation(load_scenario(ROOT / "scenarios" / "quickstart.yaml", settings=settings))


@pytest.mark.parametrize("scheduler,engine", [("vllm_v1", "vLLM V1"), ("sglang", "SGLang")])
def test_engine_models_take_the_roofline_defaults_over_the_executor_profile(scheduler, engine):
    s = sim(scheduler)
    assert s.estimator_name == "roofline" and s.estimator.config.calibrate_from is None
    assert s.provenance.source is None  # the defaults, no profile behind them
    skipped = " ".join(s.provenance.skipped)
    assert "PyTorch operators" in skipped and engine in skipped and "runtime_estimator: profile" in skipped
    assert engine in s.provenance.reason


def test_batching_policies_keep_the_profile():
    s = sim("sarathi")
    assert s.estimator_name == "profile" and Path(s.provenance.source) == H200_8B


def test_a_named_profile_still_prices_an_engine_model():
    s = sim("vllm_v1", estimator="profile")
    assert s.estimator_name == "profile" and Path(s.estimator.profile.path) == H200_8B


def test_no_calibration_on_the_executor_profile_for_an_engine_model():
    """A model without an H200 profile: batching policies get the roofline calibrated on another model's
    H200 profile, engine models its defaults."""
    assert sim("sarathi", model="meta-llama/Llama-2-13b-hf").estimator.config.calibrate_from == str(H200_8B)
    assert sim("vllm_v1", model="meta-llama/Llama-2-13b-hf").estimator.config.calibrate_from is None


def test_a_profile_measured_on_the_engine_prices_it(tmp_path, monkeypatch):
    """A profile whose metadata says it timed vLLM V1's kernels (``engine``) is taken for vllm_v1."""
    dest = tmp_path / "h200" / "meta-llama" / "Meta-Llama-3-8B"
    shutil.copytree(H200_8B, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    meta["engine"] = "vLLM V1"
    (dest / "metadata.json").write_text(json.dumps(meta))
    monkeypatch.setenv("VIDUR_PROFILE_PATH", str(tmp_path))
    assert Path(sim("vllm_v1").provenance.source) == dest
    assert sim("sglang").estimator_name == "roofline"  # another engine's kernels


def test_a_device_known_only_from_its_profile_keeps_the_profile():
    s = sim("vllm_v1", model="vidur/tiny-llama", device="cpu")
    assert s.estimator_name == "profile"
