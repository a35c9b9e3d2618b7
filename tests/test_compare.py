"""vidur compare --real: vLLM bench serve results against a simulation of the same trace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidur.cli import main
from vidur.errors import VidurError
from vidur.validate.vllm_results import load_bench_results

DATA = Path(__file__).resolve().parent / "data"
RESULTS = DATA / "vllm_bench_small.json"
TRACE = DATA / "vllm_bench_small_trace.csv"

SCENARIO = """\
model: meta-llama/Meta-Llama-3-8B
cluster: {device: h100}
replica_scheduler: {name: vllm}
runtime_estimator: roofline
workload:
  num_requests: 1
  arrival: {name: poisson, qps: 1.0}
  lengths: {name: fixed}
"""


@pytest.fixture
def scenario(tmp_path) -> str:
    p = tmp_path / "deploy.yaml"
    p.write_text(SCENARIO)
    return str(p)


def test_load_bench_results_reads_the_vllm_format():
    r = load_bench_results(RESULTS)
    assert len(r) == 6
    assert r.prompt.tolist() == [512, 256, 1024, 128, 384, 640]
    assert r.ok.tolist() == [True, True, True, True, False, True]  # request 4 failed
    assert r.e2e[2] == pytest.approx(0.183) and r.ttft[0] == pytest.approx(0.040)
    assert r.start is not None and r.duration == pytest.approx(2.62)


def test_e2e_from_itls_when_latencies_are_absent(tmp_path):
    d = json.loads(RESULTS.read_text())
    del d["latencies"]
    p = tmp_path / "old.json"
    p.write_text(json.dumps(d))
    r = load_bench_results(p)
    assert r.e2e[0] == pytest.approx(0.040 + 0.072)
    assert r.e2e[5] == pytest.approx(0.048 + 0.051)


def test_compare_cli_reports_request_and_cluster_errors(tmp_path, scenario, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--real", str(RESULTS), "--trace", str(TRACE), "--scenario", scenario,
               "--out", str(out), "--json", "--no-plots"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(stdout)
    assert rep["run"]["num_requests"] == 5 and rep["run"]["failed_requests"] == 1
    assert any("start_times" in n for n in rep["notes"])
    ttft = rep["requests"]["ttft"]
    # measured side, by hand: TTFTs of the 5 successful requests
    assert ttft["p50"]["real"] == pytest.approx(np.percentile([0.040, 0.025, 0.070, 0.018, 0.048], 50))
    assert ttft["count_real"] == 5 and ttft["count_sim"] == 5
    tpot = rep["requests"]["tpot"]
    assert tpot["p50"]["real"] == pytest.approx(np.median([0.072 / 7, 0.030 / 3, 0.113 / 11, 0.010 / 1, 0.051 / 5]))
    for m in ("ttft", "tpot", "e2e"):
        for p in ("p50", "p90", "p99"):
            cell = rep["requests"][m][p]
            assert cell["sim"] > 0 and cell["error"] == pytest.approx(abs(cell["sim"] - cell["real"]) / cell["real"])
    cl = rep["cluster"]
    # arrivals from start_times: first send at 0, last completion 2.30 + 0.099
    assert cl["makespan_s"]["real"] == pytest.approx(2.399)
    assert cl["completed"] == {"real": 5, "sim": 5}
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "requests.csv", "summary.txt"]


def test_compare_with_trace_arrivals(scenario, capsys):
    rc = main(["compare", "--real", str(RESULTS), "--trace", str(TRACE), "--scenario", scenario, "--arrivals", "trace"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "arrived_at" in out and "TTFT" in out and "makespan" in out


def _mutated(tmp_path, change) -> str:
    d = json.loads(RESULTS.read_text())
    change(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d) if not isinstance(d, str) else d)
    return str(p)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("ttfts"), "lacks the per-request field(s) ttfts"),
        (lambda d: (d.pop("latencies"), d.pop("itls")), "latencies (or itls)"),
        (lambda d: d["latencies"].pop(), "differ in length"),
        (lambda d: d["ttfts"].__setitem__(1, "fast"), "ttfts[1] must be a finite number"),
        (lambda d: d["latencies"].__setitem__(0, 0.01), "below its TTFT"),
        (lambda d: d["input_lens"].__setitem__(0, 1.5), "non-negative integers"),
    ],
)
def test_bad_results_files_are_one_line_errors(tmp_path, scenario, capsys, change, message):
    path = _mutated(tmp_path, change)
    rc = main(["compare", "--real", path, "--trace", str(TRACE), "--scenario", scenario])
    _, err = capsys.readouterr()
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_mismatched_request_counts(tmp_path, scenario, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE.read_text() + "2.80,100,5\n")
    rc = main(["compare", "--real", str(RESULTS), "--trace", str(trace), "--scenario", scenario])
    _, err = capsys.readouterr()
    assert rc == 2 and "mismatched request counts" in err and "6 requests" in err and "7 rows" in err


def test_not_json_and_wrong_shape(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(VidurError, match="not valid JSON"):
        load_bench_results(p)
    p.write_text("[1, 2]")
    with pytest.raises(VidurError, match="JSON object"):
        load_bench_results(p)
    with pytest.raises(VidurError, match="cannot read"):
        load_bench_results(tmp_path / "missing.json")
