"""Output paths are checked before any work; killed writes leave nothing that reruns trip on; default run
directories never collide (issue #16, item 5)."""

from __future__ import annotations

import os
import tempfile

import pytest

from vidur.cli import main

SCENARIO = ["scenarios/quickstart.yaml", "--no-progress", "-s", "workload.num_requests", "50"]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if anything is simulated or imported."""
    import vidur.engine.simulation as S
    import vidur.profile.vidur_import as I

    def boom(*a, **k):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(S.Simulation, "__init__", boom)
    monkeypatch.setattr(I, "import_vidur", boom)


def _commands(out):
    return {
        "run": ["run", *SCENARIO, "--out", out],
        "compare": ["compare", "--real", "missing.json", "--trace", "missing.csv", "--scenario", "scenarios/quickstart.yaml",
                    "--out", out],
        "import-vidur": ["import-vidur", "missing-dir", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "a100",
                         "--out", out],
    }


@pytest.mark.parametrize("command", ["run", "compare", "import-vidur"])
def test_an_output_path_under_a_file_is_one_line_before_any_work(tmp_path, capsys, no_work, command):
    f = tmp_path / "a-file"
    f.write_text("x")
    for out, needle in ((f / "sub", f"cannot be created: {f} is a file"), (f, "is a file, not a directory")):
        assert main(_commands(str(out))[command]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert f.read_text() == "x"


@pytest.mark.parametrize("command", ["run", "compare", "import-vidur"])
def test_a_read_only_output_path_is_one_line_before_any_work(tmp_path, capsys, no_work, monkeypatch, command):
    def read_only(*a, **k):  # as root, chmod does not make a directory read-only: fail as a read-only FS does
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert main(_commands(str(tmp_path / "out"))[command]) == 2
    err = capsys.readouterr().err
    assert f"cannot be written: {tmp_path}: Read-only file system" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_killed_writers_temporary_directory_is_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "r"
    dead = tmp_path / ".r.tmp-4194999-0123abcd"  # above any pid_max: no such process
    live = tmp_path / f".r.tmp-{os.getpid()}-4567cdef"  # a writer still running: left alone
    for d in (dead, live):
        d.mkdir()
        (d / "summary.json").write_text("{")
    assert main(["run", *SCENARIO, "--out", str(out)]) == 0, capsys.readouterr().err
    assert not dead.exists() and live.exists()
    assert (out / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r", live.name])


def test_default_run_directories_never_collide(tmp_path, capsys, monkeypatch):
    import vidur.engine.run_scenario as R

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(R, "default_out_dir", lambda scenario: tmp_path / "runs" / "quickstart-20260101-000000")
    from tests.conftest import REPO

    args = ["run", str(REPO / "scenarios/quickstart.yaml"), "--no-progress", "-s", "workload.num_requests", "20"]
    assert main(args) == 0 and main(args) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["quickstart-20260101-000000", "quickstart-20260101-000000-2"]
    assert all((tmp_path / "runs" / n / "summary.json").is_file() for n in names)
    # a run that fails after claiming its directory gives it back
    assert main(args + ["-s", "cluster.tensor_parallel", "3"]) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == names
    capsys.readouterr()
