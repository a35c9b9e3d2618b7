"""Importing profiles in the original Vidur's CSV format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidur.errors import VidurError
from vidur.estimate.base import BatchShape
from vidur.estimate.profile_estimator import ProfileConfig, ProfileEstimator
from vidur.store.profiles import load_profile
from vidur.profile.vidur_import import import_vidur, read_attention_csv
from vidur.hardware.catalog import get_device, get_node
from vidur.model.catalog import load_model

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "vidur-profiles"
need_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared vidur-profiles data not present")
TIME = "time_stats.{op}.{s}"


def write_attention_csv(path: Path, n_q_head=32, n_kv_head=8, n_embd=4096, tps=(1, 2)) -> None:
    """A small hand-made attention.csv in Vidur's format (prefill rows, decode rows)."""
    ops = ("attn_prefill", "attn_decode", "attn_kv_cache_save")
    cols = [TIME.format(op=o, s=s) for o in ops for s in ("min", "max", "mean", "median", "std")]
    head = cols + ["n_embd", "n_q_head", "n_kv_head", "block_size", "num_tensor_parallel_workers",
                   "max_model_len", "batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill", "attention_backend"]
    lines = [",".join(head)]

    def row(tp, b, q, ctx, prefill):
        vals = []
        work = q * (ctx + q / 2) if prefill else b * (ctx + 1)
        t_pre = 0.01 + 2e-7 * work / tp if prefill else ""
        t_dec = "" if prefill else 0.008 + 3e-6 * work / tp
        t_kv = 0.004 + 1e-6 * (q if prefill else b)
        for v in (t_pre, t_dec, t_kv):
            vals += ["" if v == "" else f"{v:.6f}"] * 3 + ["" if v == "" else f"{v:.6f}", "0.0001" if v != "" else ""]
        return ",".join(vals + [str(n_embd), str(n_q_head), str(n_kv_head), "16", str(tp), "4096", str(b),
                                str(q if prefill else 0), str(ctx), str(prefill), "flashinfer"])

    for tp in tps:
        for q in (64, 256, 1024, 4096):
            for ctx in (0, 512, 2048):
                if q + ctx <= 4096:
                    lines.append(row(tp, 1, q, ctx, True))
        for b in (1, 8, 64):
            for ctx in (128, 1024, 4000):
                lines.append(row(tp, b, 0, ctx, False))
    path.write_text("\n".join(lines) + "\n")


def test_hand_made_attention_csv(tmp_path):
    f = tmp_path / "attention.csv"
    write_attention_csv(f)
    rows = read_attention_csv(f, load_model("meta-llama/Meta-Llama-3-8B"))
    assert set(rows) == {1, 2}
    ops = {r[0] for r in rows[1]}
    assert ops == {"attn_prefill", "attn_decode", "kv_cache_write"}
    pre = [r for r in rows[1] if r[0] == "attn_prefill"]
    assert (256, 1, 512) in {(r[1], r[2], r[3]) for r in pre}
    with pytest.raises(VidurError, match="another model"):
        read_attention_csv(f, load_model("meta-llama/Llama-2-7b-hf"))


@need_data
def test_import_mlp_and_attention_then_price(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_CACHE_DIR", str(tmp_path / "cache"))
    model = load_model("meta-llama/Meta-Llama-3-8B")
    att = tmp_path / "attention.csv"
    write_attention_csv(att)
    src = DATA / "compute" / "a100" / "meta-llama" / "Meta-Llama-3-8B"
    out = import_vidur(src, tmp_path / "a100" / model.name, model=model, device="a100", attention=att,
                       network=DATA / "network" / "a100_dgx")
    prof = load_profile(out)
    assert set(prof.shards) == {1, 2, 4, 8}
    assert prof.metadata["device"] == "a100" and "mlp" in prof.metadata["source"]
    assert {"qkv_proj", "gate_up_proj", "down_proj", "embed", "add"} <= set(prof.shards[1].ops())
    assert "attn_prefill" not in prof.shards[4].ops()  # the hand-made attention covers tp 1, 2
    assert (out / "network.json").is_file()
    # the imported mlp times are Vidur's medians, unchanged
    q = prof.shards[1].select("qkv_proj")
    assert q["median_ms"][q["num_tokens"] == 32768][0] > 1.0
    est = ProfileEstimator(ProfileConfig(profile=str(out)), model, get_device("a100"), get_node("dgx_a100"), 2, 1)
    assert est._comm.source == "measured"
    t = est.forward_time(BatchShape.from_lists([(512, 1024)], [2000] * 16))
    assert 0.005 < t < 1.0
    with pytest.raises(VidurError, match="no attention measurements"):
        ProfileEstimator(ProfileConfig(profile=str(out)), model, get_device("a100"), get_node("dgx_a100"), 4, 1)


@need_data
def test_import_rejects_another_model(tmp_path):
    src = DATA / "compute" / "a100" / "meta-llama" / "Meta-Llama-3-8B"
    with pytest.raises(VidurError, match="measured for another model"):
        import_vidur(src, tmp_path / "x", model=load_model("meta-llama/Llama-2-7b-hf"), device="a100")


@need_data
def test_every_shared_mlp_csv_imports(tmp_path):
    for f in sorted((DATA / "compute").glob("*/*/*/mlp.csv")):
        name = f"{f.parent.parent.name}/{f.parent.name}"
        out = import_vidur(f, tmp_path / f.parts[-4] / name, model=load_model(name), device=f.parts[-4])
        meta = json.loads((out / "metadata.json").read_text())
        assert all(s["complete"] for s in meta["shards"].values())
        load_profile(out)


def test_import_cli_errors(capsys, tmp_path):
    from vidur.cli import main

    assert main(["import-vidur", str(tmp_path / "none"), "--model", "vidur/tiny-llama", "--device", "a100"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "mlp.csv").write_text("foo,bar\n1,2\n")
    assert main(["import-vidur", str(tmp_path), "--model", "vidur/tiny-llama", "--device", "a100"]) == 2
    assert "not a Vidur mlp.csv" in capsys.readouterr().err


@need_data
def test_roofline_calibrated_from_an_imported_profile(tmp_path, capsys, monkeypatch):
    from vidur.cli import main

    monkeypatch.setenv("VIDUR_CACHE_DIR", str(tmp_path / "cache"))
    src = DATA / "compute" / "a40" / "meta-llama" / "Llama-2-7b-hf"
    out = tmp_path / "a40" / "meta-llama" / "Llama-2-7b-hf"
    assert main(["import-vidur", str(src), "--model", "meta-llama/Llama-2-7b-hf", "--device", "a40", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["fit", str(out), "--holdout", "0", "--calibrate-roofline", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)["roofline"]
    cfg = rep["config"]
    assert 0.2 <= cfg["compute_efficiency"] <= 1.0 and 0.2 <= cfg["memory_efficiency"] <= 1.0
    cal = rep["calibration"]
    assert cal["token_layer"]["mape_after"] < cal["token_layer"]["mape_before"]  # defaults were not tuned on A40
    assert "attn_prefill" not in cal  # the A40 data has no attention.csv: attention keeps the defaults


@need_data
def test_an_mlp_csv_alone_warns_and_auto_never_picks_it(tmp_path, capsys, monkeypatch):
    """Issue 16 item 3: `vidur import-vidur` of an mlp.csv alone (the README's example) says the profile is
    incomplete, and `auto` then falls back to the roofline (calibrated on it), saying why."""
    import warnings

    import yaml

    from vidur.cli import main
    from vidur.engine.simulation import Simulation
    from vidur.scenario import load_scenario

    root = tmp_path / "profiles"
    monkeypatch.setenv("VIDUR_PROFILE_PATH", str(root))
    monkeypatch.setenv("VIDUR_CACHE_DIR", str(tmp_path / "cache"))
    src = DATA / "compute" / "a100" / "meta-llama" / "Meta-Llama-3-8B" / "mlp.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["import-vidur", str(src), "--model", "meta-llama/Meta-Llama-3-8B", "--device", "a100"]) == 0
    out = root / "a100" / "meta-llama" / "Meta-Llama-3-8B"
    assert f"imported into {out}" in capsys.readouterr().out  # the default root is the first $VIDUR_PROFILE_PATH entry
    msgs = [str(w.message) for w in caught]
    assert any("incomplete" in m and "no attention measurements" in m and "--attention" in m for m in msgs), msgs
    raw = {"model": "meta-llama/Meta-Llama-3-8B", "cluster": {"device": "a100"}, "workload": {"num_requests": 20}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    sim = Simulation(load_scenario(tmp_path / "s.yaml"))
    prov = sim.provenance
    assert sim.estimator_name == "roofline" and prov.source == str(out)  # calibrated on it, not priced by it
    assert len(prov.skipped) == 1 and prov.skipped[0].startswith("profile: profile ")
    assert "no attention measurements" in prov.skipped[0] and str(out) in prov.skipped[0]
    assert len(sim.run(progress=False).requests) == 20
