"""A bound on work: huge workloads are refused before they are built; Ctrl-C stops a run cleanly
(issue #16, item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vidur.cli import main

Q = "scenarios/quickstart.yaml"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)


@pytest.mark.parametrize(
    "settings, needle",
    [
        (["-s", "workload.num_requests", "1e9"], "workload.num_requests: 1,000,000,000 needs about 8.0 TB of memory"),
        (["-s", "workload.num_requests", "null", "-s", "workload.duration", "1e12"],
         "workload.duration: 1e+12 s at 4 QPS (about 4,000,000,000,000 requests) needs about"),
    ],
)
def test_a_workload_too_big_for_memory_is_refused_before_it_is_built(capsys, tmp_path, monkeypatch, settings, needle):
    def never(*a, **k):
        raise AssertionError("the workload was built")

    monkeypatch.setattr("vidur.engine.simulation.build_requests", never)
    out = tmp_path / "out"
    assert main(["run", Q, "--no-progress", "--out", str(out), *settings]) == 2
    err = capsys.readouterr().err
    assert needle in err and "is available; simulate at most about" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_bound_follows_the_memory_available(capsys, monkeypatch):
    import vidur.engine.budget as B

    monkeypatch.setattr(B, "available_memory", lambda: 50 * B.BYTES_PER_REQUEST)
    assert main(["run", Q, "--no-progress", "--no-output", "-s", "workload.num_requests", "51"]) == 2
    assert "simulate at most about 50 requests" in capsys.readouterr().err
    assert main(["run", Q, "--no-progress", "--no-output", "-s", "workload.num_requests", "50"]) == 0
    monkeypatch.setattr(B, "available_memory", lambda: None)  # unknown: no bound
    assert main(["run", Q, "--no-progress", "--no-output", "-s", "workload.num_requests", "60"]) == 0
    capsys.readouterr()


def test_more_replicas_than_memory_holds_are_refused_before_any_is_built(capsys, tmp_path, monkeypatch):
    import vidur.engine.budget as B

    def never(*a, **k):
        raise AssertionError("a replica was built")

    monkeypatch.setattr(B, "available_memory", lambda: 64 << 30)  # any machine: 1.2 TB does not fit in 64 GiB

    monkeypatch.setattr("vidur.engine.simulation.make_kv_manager", never)
    out = tmp_path / "out"
    assert main(["run", Q, "--no-progress", "--out", str(out), "-s", "cluster.num_replicas", "100000000"]) == 2
    err = capsys.readouterr().err
    assert "cluster.num_replicas: 100,000,000 needs about 1.2 TB" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_replica_bound_follows_the_memory_available(capsys, monkeypatch):
    import vidur.engine.budget as B

    monkeypatch.setattr(B, "available_memory", lambda: 3 * B.BYTES_PER_REPLICA)
    assert main(["run", Q, "--no-progress", "--no-output", "-s", "cluster.num_replicas", "4"]) == 2
    assert "simulate at most about 3 replicas" in capsys.readouterr().err
    main(["run", Q, "--no-progress", "--no-output", "-s", "cluster.num_replicas", "3"])
    err = capsys.readouterr().err  # 3 replicas pass; then the workload is too big for what is left
    assert "replicas" not in err and "workload.num_requests" in err, err


@pytest.mark.parametrize("argv, needle", [
    (["run", Q, "--seeds", "1000000000"], "--seeds 1,000,000,000 makes 1,000,000,000 simulations"),
    (["sweep", Q, "--seeds", "100000000"], "--seeds 100,000,000 makes 100,000,000 simulations"),
    (["sweep", Q, "--policy", "sarathi,vllm,orca", "--qps", ",".join(str(q) for q in range(1, 41)), "--seeds", "100"],
     "3 policies x 1 workloads x 40 loads x 100 seeds makes 12,000 simulations"),
])
def test_a_command_of_too_many_simulations_is_refused_before_it_starts(capsys, tmp_path, monkeypatch, argv, needle):
    import vidur.engine.run_scenario as R
    import vidur.sweep.driver as D

    def never(*a, **k):
        raise AssertionError("a simulation started")

    monkeypatch.setattr(R, "run_scenario", never)
    monkeypatch.setattr(D, "run_sweep", never)
    out = tmp_path / "out"
    assert main([*argv, "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "more than the 10,000 one command starts" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_ctrl_c_stops_a_run_in_one_line_and_leaves_nothing(tmp_path):
    from tests.conftest import REPO

    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidur.cli", "run", str(REPO / Q), "--no-progress", "--out", str(out),
         "-s", "workload.num_requests", "2000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(3.0)  # building the workload or simulating: 2M requests take far longer than this
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if not ln.startswith("vidur: warning:")]
    assert proc.returncode == 130 and lines == ["vidur: interrupted"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run directory, no temporary one


def test_an_interrupted_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    import vidur.metrics.outputs as O
    from vidur.engine.simulation import Simulation
    from vidur.engine.run_scenario import summarize_result
    from vidur.scenario import load_scenario

    sim = Simulation(load_scenario(Q, settings=[("workload.num_requests", 30)]))
    res = sim.run(progress=False)
    summary = summarize_result(sim, res)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(O, "write_batches_table", interrupted)  # after scenario, summary and requests are written
    with pytest.raises(KeyboardInterrupt):
        O.write_run_dir(tmp_path / "r", "x: 1\n", summary, res.records, chrome_trace=False, plots=False)
    assert list(tmp_path.iterdir()) == []
