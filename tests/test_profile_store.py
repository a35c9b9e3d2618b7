"""The profile store: locating profiles, metadata, and clear errors for broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vidur.errors import VidurError
from vidur.store import profiles as store

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "vidur" / "data" / "profiles" / "cpu" / "vidur" / "tiny-llama"


@pytest.fixture
def tiny_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of the shipped tiny profile under a root on $VIDUR_PROFILE_PATH."""
    root = tmp_path / "root"
    dst = root / "cpu" / "vidur" / "tiny-llama"
    shutil.copytree(TINY, dst)
    monkeypatch.setenv(store.PROFILE_PATH_ENV, str(root))
    monkeypatch.setenv("VIDUR_CACHE_DIR", str(tmp_path / "cache"))
    return dst


def test_shipped_profile_is_small_and_has_provenance():
    size = sum(f.stat().st_size for f in TINY.iterdir())
    assert size < 1_000_000
    meta = store.read_metadata(TINY)
    for key in ("device", "device_info", "dtype", "method", "created", "command", "model_spec", "grid"):
        assert key in meta, key
    for key in ("torch", "name", "memory_bytes"):
        assert key in meta["device_info"], key
    assert meta["model"] == "vidur/tiny-llama"
    assert store.complete_shards(meta) == [1, 2]


def test_find_profile_search_order(tiny_copy, monkeypatch):
    assert store.find_profile("cpu", "vidur/tiny-llama", 1) == tiny_copy
    assert store.find_profile("cpu", "vidur/tiny-llama", 4) is None
    assert store.find_profile("h100", "vidur/tiny-llama", 1) is None
    monkeypatch.delenv(store.PROFILE_PATH_ENV)
    assert store.find_profile("cpu", "vidur/tiny-llama", 1) == TINY.resolve()


def test_find_profile_accepts_specs():
    from vidur.model.catalog import load_model

    class Dev:
        name = "cpu"

    assert store.find_profile(Dev(), load_model("vidur/tiny-llama"), 2) is not None


def test_load_profile_and_hash_is_stable(tiny_copy):
    a = store.load_profile(tiny_copy)
    b = store.load_profile(tiny_copy)
    assert a.data_hash == b.data_hash
    assert set(a.shards) == {1, 2}
    assert "attn_decode" in a.shards[1].ops()
    f = tiny_copy / "tp1.csv"
    f.write_text(f.read_text().replace("input_norm,1,", "input_norm,1,", 1))
    assert store.load_profile(tiny_copy).data_hash == a.data_hash


def test_truncated_file_is_one_clear_error(tiny_copy):
    f = tiny_copy / "tp1.csv"
    text = f.read_text()
    f.write_text(text[: len(text) // 2])  # cut mid-line
    with pytest.raises(VidurError, match="truncated") as exc:
        store.load_profile(tiny_copy)
    assert "\n" not in str(exc.value)


def test_dropped_rows_are_detected(tiny_copy):
    f = tiny_copy / "tp2.csv"
    lines = f.read_text().splitlines(keepends=True)
    f.write_text("".join(lines[:-5]))
    with pytest.raises(VidurError, match="truncated or was edited"):
        store.load_profile(tiny_copy)


def test_corrupt_value_and_metadata(tiny_copy):
    f = tiny_copy / "tp1.csv"
    lines = f.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",", ",x", 1)
    f.write_text("".join(lines))
    with pytest.raises(VidurError, match="corrupt"):
        store.load_profile(tiny_copy)
    (tiny_copy / "metadata.json").write_text('{"format": "vidur-profile/1", "shar')
    with pytest.raises(VidurError, match="corrupt or truncated"):
        store.load_profile(tiny_copy)


def test_missing_or_incomplete_shard(tiny_copy):
    with pytest.raises(VidurError, match="no tensor-parallel shard tp=4"):
        store.load_profile(tiny_copy, tps=[4])
    meta = json.loads((tiny_copy / "metadata.json").read_text())
    meta["shards"]["2"]["complete"] = False
    (tiny_copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(VidurError, match="incomplete"):
        store.load_profile(tiny_copy, tps=[2])
    assert store.find_profile("cpu", "vidur/tiny-llama", 2) != tiny_copy  # falls through to the shipped one


def test_not_a_profile(tmp_path):
    with pytest.raises(VidurError, match="does not exist"):
        store.load_profile(tmp_path / "nope")
    with pytest.raises(VidurError, match="no metadata.json"):
        store.load_profile(tmp_path)


def test_profile_of_another_model_is_rejected():
    from vidur.model.catalog import load_model

    prof = store.load_profile(TINY)
    store.check_model_matches(prof, load_model("vidur/tiny-llama"))
    with pytest.raises(VidurError, match="measured for vidur/tiny-llama, not meta-llama/Llama-2-7b-hf"):
        store.check_model_matches(prof, load_model("meta-llama/Llama-2-7b-hf"))


def test_partial_rows_drop_torn_line(tmp_path):
    f = tmp_path / "tp1.csv"
    store.write_shard_rows(f, [("add", 1, 0, 0, 0.1, 0.1, 0.1, 0.0, 3), ("add", 2, 0, 0, 0.2, 0.2, 0.2, 0.0, 3)])
    with open(f, "a") as fh:
        fh.write("add,4,0,0,0.")
    rows = store.read_partial_rows(f)
    assert [r[1] for r in rows] == [1.0, 2.0]
    assert f.read_text().endswith("\n")
    assert len(store.read_partial_rows(f)) == 2


def test_lookup_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    """Issue 16 item 7: `auto` resolves the same profile from any directory (the shipped one, inside the
    package), a ./profiles directory in the working directory is never searched, and the run header names
    the profile and where it was found."""
    import subprocess
    import sys

    monkeypatch.delenv(store.PROFILE_PATH_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # an empty user profile directory
    decoy = tmp_path / "elsewhere" / "profiles" / "h200" / "meta-llama" / "Meta-Llama-3-8B"
    decoy.mkdir(parents=True)
    (decoy / "metadata.json").write_text(json.dumps({"format": store.FORMAT, "shards": {"1": {"complete": True}}}))
    shipped = store.SHIPPED_PROFILES / "h200" / "meta-llama" / "Meta-Llama-3-8B"
    headers = []
    for cwd in (REPO, tmp_path / "elsewhere"):
        monkeypatch.chdir(cwd)
        assert store.find_pricing_profile("h200", "meta-llama/Meta-Llama-3-8B", 1)[0] == shipped
        out = subprocess.run(
            [sys.executable, "-m", "vidur.cli", "run", str(REPO / "scenarios" / "quickstart.yaml"), "--no-output",
             "--no-progress", "-s", "cluster.device", "h200", "-s", "workload.num_requests", "20"],
            capture_output=True, text=True, check=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        ).stdout
        headers.append([ln for ln in out.splitlines() if ln.strip().startswith("estimator profile")])
    assert headers[0] == headers[1] and len(headers[0]) == 1, headers
    assert f"from {shipped} [shipped with vidur]" in headers[0][0]
    assert store.root_label(shipped) == "shipped with vidur"
