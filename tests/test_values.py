"""Bad values get one line (exit 2); numbers written as text are numbers; clipping and impossible
iterations are reported (issue #16, item 6)."""

from __future__ import annotations

import json

import pytest
import yaml

from vidur.cli import main
from vidur.config import parse_value, yaml_load

Q = "scenarios/quickstart.yaml"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--seed", "-1"], "seed must be an integer >= 0"),
        (["-s", "seed", "1.5"], "seed must be an integer >= 0"),
        (["-s", "simulation.max_time", "0"], "simulation.max_time must be > 0"),
        (["-s", "simulation.max_time", "-5"], "simulation.max_time must be > 0"),
        (["-s", "replica_scheduler.chunk_size", "512.5"], "replica_scheduler.chunk_size must be an integer, got 512.5"),
        (["-s", "simulation.fast_forward", "maybe"], "simulation.fast_forward must be true or false, got 'maybe'"),
        (["-s", "metrics.plots", "1"], "metrics.plots must be true or false, got 1"),
        (["-s", "workload.lengths.max_tokens", "abc"], "workload.lengths.max_tokens must be an integer, got 'abc'"),
        (["-s", "cluster.num_replicas", "2.5"], "cluster.num_replicas must be an integer"),
        (["-s", "workload.num_requests", "2.5"], "workload.num_requests must be a positive integer"),
    ],
)
def test_bad_values_are_one_line(capsys, tmp_path, extra, needle):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", Q, "--no-progress", "--out", str(out), *extra)
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not out.exists()


def test_exponents_written_without_a_dot_are_numbers():
    """YAML 1.1 reads ``1e9`` as text; scenarios read it as the number a user means (as YAML 1.2 does)."""
    assert yaml_load("a: 1e9\nb: 2.5E-3\nc: 1e\nd: 7") == {"a": 1e9, "b": 2.5e-3, "c": "1e", "d": 7}
    assert parse_value("1e3") == 1000.0 and parse_value("maybe") == "maybe"


def test_integral_numbers_in_exponent_form_are_accepted(capsys, tmp_path):
    raw = yaml.safe_load(open(Q))
    text = yaml.safe_dump(raw).replace("num_requests: 2000", "num_requests: 2e2")
    assert "num_requests: 2e2" in text
    p = tmp_path / "s.yaml"
    p.write_text(text + "\n")
    code, out, err = run_cli(
        capsys, "run", str(p), "--print-config", "-s", "replica_scheduler.chunk_size", "1.024e3",
        "-s", "workload.arrival.qps", "5e0",
    )
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["workload"]["num_requests"] == 200 and isinstance(cfg["workload"]["num_requests"], int)
    assert cfg["replica_scheduler"]["chunk_size"] == 1024 and isinstance(cfg["replica_scheduler"]["chunk_size"], int)
    assert cfg["workload"]["arrival"]["qps"] == 5.0


def test_clipping_by_max_tokens_is_counted(capsys, tmp_path):
    from vidur.workload.lengths import UniformLengths

    gen = UniformLengths(UniformLengths.Config(prompt_min=10, prompt_max=10, output_min=5, output_max=30, max_tokens=25))
    import numpy as np

    p, o = gen.sample(np.random.default_rng(0), 400)
    expect = int(np.count_nonzero(p + o > 25))
    p2, o2 = gen.generate(np.random.default_rng(0), 400)
    assert 0 < gen.clipped == expect < 400 and (p2 + o2).max() == 25
    out = tmp_path / "r"
    with pytest.warns(UserWarning) as caught:
        code, _, err = run_cli(
            capsys, "run", Q, "--no-progress", "--out", str(out), "-s", "workload.num_requests", "300",
            "-s", "workload.lengths.max_tokens", "600",
        )
    assert code == 0, err
    run = json.loads((out / "summary.json").read_text())["run"]
    assert run["clipped_requests"] > 0
    msgs = [str(w.message) for w in caught]
    assert [m for m in msgs if f"workload.lengths.max_tokens (600) clipped {run['clipped_requests']} of 300 requests" in m]
    gen = UniformLengths(UniformLengths.Config(max_tokens=None))
    gen.generate(np.random.default_rng(0), 10)
    assert gen.clipped == 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--prefill", "9000:0"], "a sequence of 9000 tokens but meta-llama/Meta-Llama-3-8B supports 8192"),
        (["--decode", "512:8000"], "tokens of KV cache but tp=1 pp=1 on h100 has room for"),
    ],
)
def test_estimate_warns_about_iterations_no_engine_can_run(capsys, args, needle):
    code, out, err = run_cli(capsys, "estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h100", *args, "--json")
    assert code == 0, err
    assert any(needle in w for w in json.loads(out)["warnings"])
    code, out, err = run_cli(capsys, "estimate", "--model", "meta-llama/Meta-Llama-3-8B", "--device", "h100", "--decode", "8:1000", "--json")
    assert code == 0 and json.loads(out)["warnings"] == []
