"""The command line: runs, overrides, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from vidur.cli import main

Q = "scenarios/quickstart.yaml"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def small(*extra):
    return [Q, "--no-progress", "-s", "workload.num_requests", "200", *extra]


def test_run_writes_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "run", *small("--out", str(out), "--chrome-trace"))
    assert code == 0, err
    assert "TTFT" in stdout and "run directory" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["completed"] == 200
    assert summary["run"]["replica_scheduler"] == "sarathi"
    resolved = yaml.safe_load((out / "scenario.yaml").read_text())
    assert resolved["workload"]["num_requests"] == 200
    from vidur.metrics.tablefile import read_run_table

    assert len(read_run_table(out, "requests")["request_id"]) == 200  # requests.parquet (the default)
    assert (out / "requests.parquet").is_file() and not (out / "requests.csv").exists()
    trace = json.loads((out / "trace.json").read_text())
    assert trace["traceEvents"]


def test_scheduler_and_setting_overrides(capsys):
    code, out, err = run_cli(
        capsys, "run", Q, "--print-config", "--scheduler", "vllm", "--global-scheduler", "lor",
        "-s", "replica_scheduler.max_tokens_in_batch", "2048", "--seed", "9",
    )
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["replica_scheduler"]["name"] == "vllm"
    assert cfg["replica_scheduler"]["max_tokens_in_batch"] == 2048
    assert cfg["replica_scheduler"]["max_batch_size"] == 128  # kept: vllm accepts it
    assert "chunk_size" not in cfg["replica_scheduler"]  # dropped: vllm has no such knob
    assert cfg["global_scheduler"]["name"] == "lor"
    assert cfg["seed"] == 9


def test_same_seed_same_bytes(tmp_path, capsys):
    dirs = []
    for i in range(2):
        d = tmp_path / f"r{i}"
        assert run_cli(capsys, "run", *small("--out", str(d), "--seed", "3"))[0] == 0
        dirs.append(d)
    for name in ("summary.json", "requests.parquet", "batches.parquet", "scenario.yaml"):
        assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes(), name
    d = tmp_path / "other-seed"
    assert run_cli(capsys, "run", *small("--out", str(d), "--seed", "4"))[0] == 0
    assert (d / "requests.parquet").read_bytes() != (dirs[0] / "requests.parquet").read_bytes()


@pytest.mark.parametrize("scenario", [Q, "scenarios/validate-tiny-cpu.yaml"], ids=["roofline", "profile"])
def test_step_mode_gives_identical_files(tmp_path, capsys, scenario):
    a, b = tmp_path / "fast", tmp_path / "step"
    args = [scenario, "--no-progress", "-s", "workload.num_requests", "300"]
    assert run_cli(capsys, "run", *args, "--out", str(a))[0] == 0
    assert run_cli(capsys, "run", *args, "--out", str(b), "--step")[0] == 0
    for name in ("summary.json", "requests.parquet", "batches.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_existing_run_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "run", *small("--out", str(out)))[0] == 0
    code, _, err = run_cli(capsys, "run", *small("--out", str(out)))
    assert code == 2 and "--overwrite" in err
    assert run_cli(capsys, "run", *small("--out", str(out), "--overwrite"))[0] == 0


BAD = [
    (["-s", "replica_scheduler.chunk_sze", "5"], "did you mean 'chunk_size'"),
    (["-s", "cluster.tensor_paralel", "2"], "did you mean 'tensor_parallel'"),
    (["--scheduler", "sarathii"], "valid: faster_transformer, lightllm, orca, sarathi"),
    (["--global-scheduler", "nope"], "unknown global scheduler 'nope'"),
    (["-s", "workload.arrival.qps", "0"], "qps must be"),
    (["-s", "workload.arrival.qps", "-2"], "qps must be"),
    (["-s", "cluster.tensor_parallel", "3"], "not divisible by tensor_parallel=3"),
    (["-s", "cluster.pipeline_parallel", "5"], "not divisible by pipeline_parallel=5"),
    (["-s", "model", "meta-llama/Llama-2-70b-hf"], "GB of weights per GPU"),
    (["-s", "model", "meta-llama/Llama-9"], "unknown model"),
    (["-s", "cluster.device", "h1000"], "did you mean 'h100'"),
    (["-s", "workload.lengths", "{name: trace, path: /no/such.csv}"], "trace file not found"),
    (["-s", "replica_scheduler.chunk_size", "abc"], "replica_scheduler.chunk_size"),
    (["-s", "metrics.slos.ttfx", "{max_s: 1}"], "unknown SLO metric 'ttfx'"),
    (["-s", "workload.num_requests", "-5"], "num_requests must be a positive integer"),
    (["-s", "cluster.tensor_parallel", "16"], "does not fit in one"),
]


@pytest.mark.parametrize("extra,needle", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line(extra, needle, capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", Q, "--out", str(tmp_path / "x"), *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidur: error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing half-written


@pytest.mark.parametrize(
    "text,needle",
    [
        ("model: x\n  bad: [\n", "invalid YAML"),
        ("modl: x\n", "did you mean 'model'"),
        ("- a\n- b\n", "expected a mapping"),
        ("model: meta-llama/Meta-Llama-3-8B\nworkload: {arrival: {name: poisson, qps: 1}}\n", "exactly one of"),
        # a missing key inside a mapping of named entries: the path once, without the quotes cattrs puts on keys
        ("model: meta-llama/Meta-Llama-3-8B\nworkload: {num_requests: 5}\nmetrics: {slos: {ttft: {quantile: 0.9}}}\n",
         "missing required key 'metrics.slos.ttft.max_s'"),
    ],
)
def test_bad_scenario_files(tmp_path, capsys, text, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    code, _, err = run_cli(capsys, "run", str(p))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_missing_scenario_file(capsys):
    code, _, err = run_cli(capsys, "run", "no/such/scenario.yaml")
    assert code == 2 and "file not found" in err


def test_malformed_trace_names_the_line(tmp_path, capsys):
    t = tmp_path / "t.csv"
    t.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,abc,3\n")
    code, _, err = run_cli(capsys, "run", Q, "--no-output", "-s", "workload.lengths", f"{{name: trace, path: {t}}}")
    assert code == 2 and "line 3" in err


def test_plugins_lists_builtins(capsys):
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    for name in ("sarathi", "vllm", "orca", "faster_transformer", "lightllm", "round_robin", "lor", "roofline", "paged", "poisson", "h100"):
        assert name in out
    assert "vidur-sim" in out


SHIPPED = sorted(p.name for p in (__import__("tests.conftest").conftest.SCENARIOS).glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_runs(name, capsys):
    path = f"scenarios/{name}"
    if name.startswith("search-"):
        code, _, err = run_cli(capsys, "run", path, "--no-output")
        assert code == 2 and "vidur search" in err
        return
    code, out, err = run_cli(capsys, "run", path, "--no-output", "--no-progress", "-s", "workload.num_requests", "100")
    assert code == 0, err
    assert "100/100 completed" in out and "estimator:" in out
