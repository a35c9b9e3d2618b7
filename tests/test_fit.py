"""Fitting: isotonic solvers, curves, caching by data hash, held-out accuracy on real GPU data."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from vidur.errors import VidurError
from vidur.estimate import fit
from vidur.estimate.profiles import load_profile

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "profiles" / "cpu" / "vidur" / "tiny-llama"
COMPUTE = REPO.parent / "shared" / "data" / "vidur-profiles" / "compute"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_CACHE_DIR", str(tmp_path / "cache"))


def test_numpy_pava_matches_sklearn():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = np.cumsum(rng.normal(0.1, 1.0, 60))
        w = rng.uniform(0.5, 3, 60)
        assert np.allclose(fit.pava(y, w), fit.isotonic(y, w, backend="sklearn"), atol=1e-9)
    assert np.all(np.diff(fit.pava(rng.normal(size=100))) >= -1e-12)


def test_local_smoothing_averages_noise_and_keeps_narrow_features():
    """Noisy CPU token-level curves: dense sizes are averaged locally, a 3-row GEMM hump survives."""
    n = np.arange(1, 129, dtype=float)
    true = 0.2e-3 * (1 + n / 32)
    true[2] *= 1.4  # n = 3: slower than 2 and 4, as CPU GEMMs are
    noisy = true * np.exp(np.random.default_rng(0).normal(0, 0.08, len(n)))
    c = fit.Curve.fit(n, noisy, smooth="local")
    err_raw = np.abs(np.log(noisy / true))[8:].mean()
    err_fit = np.abs(np.log(c.eval_array(n) / true))[8:].mean()
    assert err_fit < 0.6 * err_raw
    assert c(3) > 1.25 * max(c(2), c(4))
    assert c(200) == pytest.approx(c(128) * 200 / 128, rel=1e-9)  # proportional past the last knot


def test_curve_interpolates_in_log_space_and_extrapolates_gently():
    c = fit.Curve.fit([1, 10, 100], [1.0, 1.0, 10.0], smooth=False)
    assert math.isclose(c(10), 1.0) and math.isclose(c(100), 10.0)
    assert math.isclose(c(1000), 100.0)  # proportional beyond the last knot
    assert math.isclose(c(0.5), 1.0)  # flat below the first
    assert math.isclose(c(math.sqrt(10) * 10), math.sqrt(10), rel_tol=1e-9)  # power law between knots
    xs = np.array([0.5, 3, 50, 500, 5000])
    assert np.allclose(c.eval_array(xs), [c(x) for x in xs])
    assert fit.Curve.from_json(json.loads(json.dumps(c.to_json())))(77) == pytest.approx(c(77), rel=1e-6)


def test_smoothing_makes_noisy_curves_monotone():
    c = fit.Curve.fit([1, 2, 3, 4], [1.0, 0.5, 2.0, 1.5], smooth=True)
    assert np.all(np.diff(c.ys) >= 0)
    raw = fit.Curve.fit([1, 2, 3, 4], [1.0, 0.5, 2.0, 1.5], smooth=False)
    assert raw(2) == pytest.approx(0.5)


def test_fitted_profile_roundtrip():
    prof = load_profile(TINY)
    fp = fit.fit_profile(prof)
    back = fit.FittedProfile.from_json(json.loads(json.dumps(fp.to_json())))
    for tp in (1, 2):
        a, b = fp.shards[tp], back.shards[tp]
        assert a.prefill_time(300, 100) == pytest.approx(b.prefill_time(300, 100), rel=1e-6)
        assert a.decode_time(7, 900) == pytest.approx(b.decode_time(7, 900), rel=1e-6)
        assert a.token["qkv_proj"](1234) == pytest.approx(b.token["qkv_proj"](1234), rel=1e-6)


def test_cache_is_keyed_by_the_data_hash(tmp_path):
    p = tmp_path / "p"
    shutil.copytree(TINY, p)
    (p / fit.FIT_FILE).unlink()
    prof = load_profile(p)
    first = fit.get_fitted(prof)
    assert (fit.cache_dir() / f"{prof.data_hash}.json").is_file()
    again = fit.get_fitted(load_profile(p))
    assert again.data_hash == first.data_hash
    # change one measurement: new hash, new fit
    f = p / "tp1.csv"
    lines = f.read_text().splitlines(keepends=True)
    parts = lines[-1].split(",")
    parts[4] = str(float(parts[4]) * 2)
    lines[-1] = ",".join(parts)
    f.write_text("".join(lines))
    changed = load_profile(p)
    assert changed.data_hash != prof.data_hash
    assert fit.get_fitted(changed).data_hash == changed.data_hash
    # a stale fitted.json in the profile is ignored
    first.save(p / fit.FIT_FILE)
    assert fit.get_fitted(changed).data_hash == changed.data_hash


def test_shipped_fit_matches_shipped_data():
    prof = load_profile(TINY)
    d = json.loads((TINY / fit.FIT_FILE).read_text())
    assert d["data_hash"] == prof.data_hash, "profiles/cpu/vidur/tiny-llama/fitted.json is stale: run `vidur fit`"


def test_fit_command_is_fast_and_reports_holdout(tmp_path):
    p = tmp_path / "p"
    shutil.copytree(TINY, p)
    t0 = time.perf_counter()
    rep = fit.fit_command(p, holdout=0.2)
    assert time.perf_counter() - t0 < 20
    assert rep["fit_seconds"] < 10
    assert set(rep["holdout"]) == {1, 2}
    assert "qkv_proj" in rep["holdout"][1]
    assert all(v["n_test"] >= 1 for v in rep["holdout"][1].values())


def test_fit_command_rejects_empty(tmp_path):
    from vidur.estimate.profiles import write_metadata

    write_metadata(tmp_path, {"format": "vidur-profile/1", "model": "x", "shards": {}})
    with pytest.raises(VidurError, match="no complete shard"):
        fit.fit_command(tmp_path)


@pytest.mark.skipif(not COMPUTE.is_dir(), reason="shared vidur-profiles data not present")
def test_holdout_mape_on_real_a100_measurements(tmp_path):
    """Token-level operators measured by Vidur on A100: ≤ 5 % held-out MAPE per operator and TP."""
    from vidur.estimate.vidur_import import import_vidur
    from vidur.model.catalog import load_model

    src = COMPUTE / "a100" / "meta-llama" / "Meta-Llama-3-8B"
    out = import_vidur(src, tmp_path / "p", model=load_model("meta-llama/Meta-Llama-3-8B"), device="a100")
    res = fit.holdout_mape(load_profile(out), 0.2, seed=0)
    assert set(res) == {1, 2, 4, 8}
    worst = max(v["mape"] for ops in res.values() for v in ops.values())
    assert worst <= 5.0, res
