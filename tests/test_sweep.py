"""Policy sweeps (``vidur sweep``): Student-t intervals and paired tests, identical request
streams per seed, aggregation, resuming, third-party policies, outputs and bad input."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.cli import main
from vidur.errors import VidurError
from vidur.metrics.headline import headline_metrics, headline_values
from vidur.metrics.intervals import betainc, mean_interval, paired_test, t_cdf, t_quantile
from vidur.sweep import SweepSpec, WorkloadChoice, build_policies, parse_variant, run_sweep
from vidur.sweep.spec import Variant

SCENARIO = {
    "model": "meta-llama/Meta-Llama-3-8B",
    "cluster": {"device": "a100", "num_replicas": 2},
    "replica_scheduler": {"name": "sarathi", "chunk_size": 512},
    "global_scheduler": "round_robin",
    "workload": {"num_requests": 60, "arrival": {"name": "poisson", "qps": 4.0},
                 "lengths": {"name": "lognormal", "max_tokens": 2048}},
    "metrics": {"slos": {"ttft": {"quantile": 0.9, "max_s": 0.5}}},
}


def spec(policies=("sarathi", "vllm"), loads=(3.0, 6.0), seeds=(0, 1), baseline=None, routers=("round_robin",)):
    pols = build_policies([parse_variant(p, "--policy") for p in policies], [Variant(r) for r in routers])
    return SweepSpec(scenario=dict(SCENARIO), policies=pols, workloads=(WorkloadChoice("w", None),),
                     loads=tuple(loads), seeds=tuple(seeds), baseline=baseline or pols[0].label)


def quiet(_msg):
    pass


# ------------------------------------------------------------ intervals


@pytest.mark.parametrize(("df", "t975"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_printed_table(df, t975):
    assert t_quantile(0.975, df) == pytest.approx(t975, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-t975, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.2, 40), b=st.floats(0.2, 40), x=st.floats(0.001, 0.999))
def test_betainc_is_a_distribution_function_with_its_symmetry(a, b, x):
    v = betainc(a, b, x)
    assert 0.0 <= v <= 1.0
    # (1 - x is rounded: near 0 or 1, where I_x is steep, that alone moves the value; x stays inside)
    assert v == pytest.approx(1.0 - betainc(b, a, 1.0 - x), abs=1e-7)
    assert betainc(a, b, min(1.0, x + 0.05)) >= v - 1e-12


@settings(max_examples=40, deadline=None)
@given(p=st.floats(0.01, 0.99), df=st.integers(1, 200))
def test_t_quantile_inverts_the_cdf(p, df):
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-8)


def test_paired_test_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.normal(size=5)
        b = a + rng.normal(0.5, 1.0, size=5)
        ours = paired_test(list(b), list(a))
        assert ours.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-7)
        assert ours.diff.mean == pytest.approx(float(np.mean(b - a)))


def test_a_95_percent_interval_covers_the_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(2000):
        iv = mean_interval(rng.normal(3.0, 2.0, size=5).tolist())
        hits += iv.low <= 3.0 <= iv.high
    assert 0.93 < hits / 2000 < 0.97


def test_intervals_of_degenerate_samples():
    assert mean_interval([]).mean is None
    one = mean_interval([2.0, None, float("nan")])
    assert (one.mean, one.half, one.n) == (2.0, None, 1)
    assert paired_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    shift = paired_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert shift.p_value == 0.0 and shift.significant() and shift.relative == pytest.approx(0.5)
    assert paired_test([1.0], [2.0]).p_value is None


# ------------------------------------------------------------ policies and cells


def test_policy_variants_parse_with_options_and_labels():
    v = parse_variant("sarathi:chunk_size=256,max_batch_size=64", "--policy")
    assert v.name == "sarathi" and dict(v.options) == {"chunk_size": 256, "max_batch_size": 64}
    pols = build_policies([Variant("vllm"), v], [Variant("lor"), Variant("random")])
    assert [p.label for p in pols] == ["vllm/lor", "vllm/random", "sarathi:chunk_size=256,max_batch_size=64/lor",
                                       "sarathi:chunk_size=256,max_batch_size=64/random"]
    with pytest.raises(VidurError, match="not key=value"):
        parse_variant("sarathi:chunk_size", "--policy")
    with pytest.raises(VidurError, match="twice"):
        build_policies([Variant("vllm"), Variant("vllm")], [Variant("lor")])


def test_a_cell_scenario_switches_the_policy_keeps_shared_options_and_sets_load_and_seed():
    s = spec(policies=("vllm", "sarathi:chunk_size=256"))
    cells = s.cells()
    assert len(cells) == 2 * 2 * 2
    raw = s.scenario_of(cells[0])
    assert raw["replica_scheduler"]["name"] == "sarathi" or raw["replica_scheduler"]["name"] == "vllm"
    by = {c.policy.label: s.scenario_of(c) for c in cells if c.qps == 6.0 and c.seed == 1}
    assert by["sarathi:chunk_size=256"]["replica_scheduler"] == {"name": "sarathi", "chunk_size": 256}
    assert by["vllm"]["replica_scheduler"]["name"] == "vllm"
    assert all(r["workload"]["arrival"]["qps"] == 6.0 and r["seed"] == 1 for r in by.values())


# ------------------------------------------------------------ running a sweep


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    s = spec()
    return s, out, run_sweep(s, out, executor="serial", progress=False, log=quiet)


def test_every_policy_replays_the_same_request_stream_per_seed(swept):
    _, _, outcome = swept
    ok = [c for c in outcome.cells if c["status"] == "ok"]
    assert len(ok) == 8
    streams = {}
    for c in ok:
        streams.setdefault((c["qps"], c["seed"]), set()).add(c["stream"])
    assert all(len(v) == 1 for v in streams.values())  # one stream per (load, seed), whatever the policy
    assert len({next(iter(v)) for v in streams.values()}) == 4  # and a different one per (load, seed)


def test_a_cell_equals_vidur_run_of_the_same_scenario(swept):
    from vidur.engine.run_scenario import run_scenario
    from vidur.scenario import scenario_from_dict

    s, _, outcome = swept
    cell = next(c for c in s.cells() if c.policy.label == "vllm" and c.qps == 6.0 and c.seed == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the clipping warning
        _, summary = run_scenario(scenario_from_dict(s.scenario_of(cell)), None)
    row = next(c for c in outcome.cells if c["policy"] == "vllm" and c["qps"] == 6.0 and c["seed"] == 1)
    assert row["metrics"] == headline_values(summary)


def test_summary_is_the_mean_and_t_interval_over_seeds(swept):
    _, _, outcome = swept
    for r in outcome.summary:
        vals = [c["metrics"][r["metric"]] for c in outcome.cells
                if c["policy"] == r["policy"] and c["qps"] == r["qps"]]
        assert r["seeds"] == 2
        assert r["mean"] == pytest.approx(float(np.mean(vals)))
        expected_half = t_quantile(0.975, 1) * float(np.std(vals, ddof=1)) / math.sqrt(2)
        assert r["half_width"] == pytest.approx(expected_half, abs=1e-12)


def test_paired_rows_compare_with_the_baseline_seed_by_seed(swept):
    _, _, outcome = swept
    names = {h.name for h in headline_metrics()}
    assert {r["policy"] for r in outcome.paired} == {"vllm"}
    for r in outcome.paired:
        assert r["metric"] in names and r["baseline"] == "sarathi"
        by_seed = {c["seed"]: c["metrics"][r["metric"]] for c in outcome.cells if c["qps"] == r["qps"]
                   and c["policy"] == "vllm"}
        base = {c["seed"]: c["metrics"][r["metric"]] for c in outcome.cells if c["qps"] == r["qps"]
                and c["policy"] == "sarathi"}
        assert r["diff"] == pytest.approx(float(np.mean([by_seed[s] - base[s] for s in (0, 1)])))


def test_outputs_tables_report_and_plots(swept):
    _, out, outcome = swept
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert len(rows) == 8 and {r["policy"] for r in rows} == {"sarathi", "vllm"}
    assert (out / "summary.csv").exists() and (out / "paired.csv").exists()
    pytest.importorskip("matplotlib")
    for name in ("latency_vs_load.png", "goodput_vs_load.png", "cdf_3qps.png", "cdf_6qps.png"):
        assert (out / name).stat().st_size > 1000
    assert "vs sarathi (paired over seeds" in outcome.report
    assert "TTFT p99 (ms)" in outcome.report


def test_a_rerun_resumes_and_a_new_seed_runs_only_its_cells(swept, tmp_path):
    s, out, first = swept
    again = run_sweep(s, out, executor="serial", progress=False, log=quiet)
    assert (again.ran, again.reused) == (0, 8)
    assert [c["metrics"] for c in again.cells] == [c["metrics"] for c in first.cells]
    more = run_sweep(spec(seeds=(0, 1, 2)), out, executor="serial", progress=False, log=quiet)
    assert (more.ran, more.reused) == (4, 8)


def test_process_pool_gives_the_same_cells(swept, tmp_path):
    s, _, first = swept
    small = spec(loads=(6.0,), seeds=(1,))
    pooled = run_sweep(small, tmp_path / "p", executor="process", jobs=2, progress=False, plots=False, log=quiet)
    ref = {(c["policy"], c["qps"], c["seed"]): c["metrics"] for c in first.cells}
    for c in pooled.cells:
        assert c["metrics"] == ref[(c["policy"], c["qps"], c["seed"])]


def test_third_party_policies_are_swept(vidur_register, tmp_path):
    from vidur.builtin.policies.sarathi import SarathiScheduler

    class Tiny(SarathiScheduler):
        """Sarathi under another name (a stand-in for a plugin's policy)."""

        name = "tiny_chunks"

    vidur_register(Tiny)
    s = spec(policies=("sarathi", "tiny_chunks:chunk_size=64"), loads=(6.0,), seeds=(0, 1))
    outcome = run_sweep(s, tmp_path / "t", executor="serial", progress=False, plots=False, log=quiet)
    assert {c["policy"] for c in outcome.cells if c["status"] == "ok"} == {"sarathi", "tiny_chunks:chunk_size=64"}
    assert any(r["policy"] == "tiny_chunks:chunk_size=64" for r in outcome.paired)


def test_an_in_process_policy_is_refused_for_worker_processes(vidur_register, tmp_path):
    """Spawned workers lack a plugin registered in this process: refused in one line before any
    cell runs (not stored as skipped cells that a rerun would never retry)."""
    from vidur.builtin.policies.sarathi import SarathiScheduler

    class Local(SarathiScheduler):
        """Sarathi under another name (a stand-in for a plugin's policy)."""

        name = "local_chunks"

    vidur_register(Local)
    s = spec(policies=("sarathi", "local_chunks"), loads=(6.0,), seeds=(0,))
    with pytest.raises(VidurError, match="replica scheduler 'local_chunks' is registered in this process only"):
        run_sweep(s, tmp_path / "t", executor="process", jobs=2, progress=False, plots=False, log=quiet)
    assert not (tmp_path / "t" / "cells.jsonl").exists() or not (tmp_path / "t" / "cells.jsonl").read_text()


# ------------------------------------------------------------ command line


@pytest.fixture
def scenario_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(SCENARIO))
    return p


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--policy", "nope"], "nope"),
        (["--baseline", "orca"], "--baseline 'orca' is not one of the policies"),
        (["--qps", "4,x"], "--qps takes numbers"),
        (["--qps", "4", "--load", "1"], "not both"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--policy", "sarathi:chunk_size=abc"], "chunk_size"),
        (["--trace", "/nonexistent.csv"], "does not exist"),
        (["-s", "model", "no-such/model"], "unknown model 'no-such/model'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(scenario_file, tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    code = main(["sweep", str(scenario_file), "--out", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_list_and_load_multiples(scenario_file, capsys):
    code = main(["sweep", str(scenario_file), "--policy", "vllm,sarathi", "--load", "0.5,1", "--seeds", "3", "--list"])
    text = capsys.readouterr().out
    assert code == 0
    assert "12 simulations" in text and "2 QPS" in text and "4 QPS" in text and "seed 2" in text


# ------------------------------------------------------------ vidur run --seeds


def test_run_seeds_reports_intervals_of_the_per_seed_runs(scenario_file, tmp_path, capsys):
    import json

    out = tmp_path / "r"
    code = main(["run", str(scenario_file), "--seeds", "3", "--seed", "4", "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert "over 3 seeds (4, 5, 6)" in text and "TTFT p99 (ms)" in text
    data = json.loads((out / "intervals.json").read_text())
    assert data["seeds"] == [4, 5, 6]
    per_seed = {s: headline_values(json.loads((out / f"seed-{s}" / "summary.json").read_text())) for s in (4, 5, 6)}
    for row in data["metrics"]:
        vals = [per_seed[s][row["metric"]] for s in (4, 5, 6)]
        iv = mean_interval(vals)
        assert row["mean"] == pytest.approx(iv.mean) and row["half_width"] == pytest.approx(iv.half)
        assert row["low"] <= row["mean"] <= row["high"]
    # the run directories are those of vidur run --seed s
    assert main(["run", str(scenario_file), "--seed", "5", "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    assert (tmp_path / "one" / "summary.json").read_text() == (out / "seed-5" / "summary.json").read_text()


def test_run_seeds_refuses_one_seed_and_an_occupied_out(scenario_file, tmp_path, capsys):
    assert main(["run", str(scenario_file), "--seeds", "1", "--no-output"]) == 2
    assert "--seeds must be >= 2" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "intervals.json").write_text("{}")
    assert main(["run", str(scenario_file), "--seeds", "2", "--out", str(tmp_path / "o")]) == 2
    assert "already holds runs" in capsys.readouterr().err


def test_a_metric_table_entry_with_a_headline_role_is_swept(monkeypatch, tmp_path):
    """One entry in the metric table puts a metric in the sweep's tables and CDFs."""
    from vidur.metrics import table
    from vidur.metrics.table import METRICS, Metric

    span = Metric(name="prefill_span", label="prefill span", title="First scheduled to first token",
                  definition="first_token - first_scheduled", end="first_token", start="first_scheduled",
                  headline=(0.99,))
    monkeypatch.setattr(table, "METRICS", METRICS + (span,))
    s = spec(policies=("sarathi", "vllm"), loads=(6.0,), seeds=(0, 1))
    outcome = run_sweep(s, tmp_path / "m", executor="serial", progress=False, plots=False, log=quiet)
    assert {r["metric"] for r in outcome.summary} >= {"prefill_span_p99_s", "ttft_p50_s"}
    assert any(r["metric"] == "prefill_span_p99_s" for r in outcome.paired)
    assert "prefill span p99 (ms)" in outcome.report
    assert all(len(c["cdf"]["prefill_span"]) == 101 for c in outcome.cells)


@pytest.mark.parametrize("mode", ["full", "summary"])
def test_a_sweep_points_mfu_and_mbu_do_not_depend_on_the_batch_log_mode(mode, monkeypatch):
    """A cell is summarised as ``vidur run`` summarises (the model's cost functions), so its
    MFU/MBU are the same with the batch log kept in full or summarised (not None in one)."""
    import vidur.metrics.headline as headline
    from vidur.engine.run_scenario import summarize_result
    from vidur.engine.simulation import Simulation
    from vidur.plugins import get_host
    from vidur.scenario import scenario_from_dict
    from vidur.sweep.worker import build_stream, run_cell, table_digest

    raw = {**SCENARIO, "metrics": {**SCENARIO["metrics"], "batch_log": mode}}
    table, clipped = build_stream(raw)
    task = {"key": "k", "index": 0, "policy": "sarathi", "workload": "w", "qps": 4.0, "seed": 0,
            "scenario": raw, "table": table, "clipped": clipped, "digest": table_digest(table)}
    seen = []
    real = headline.headline_values
    monkeypatch.setattr(headline, "headline_values", lambda s: seen.append(s) or real(s))
    assert run_cell(task)["status"] == "ok"
    (cell,) = seen
    # the reference: `vidur run` of the same scenario with the batch log kept in full
    full_raw = {**raw, "metrics": {**raw["metrics"], "batch_log": "full"}}
    sim = Simulation(scenario_from_dict(full_raw, get_host()), get_host(), requests=table)
    ref = summarize_result(sim, sim.run(progress=False))
    for got, want in zip(cell["replicas"], ref["replicas"], strict=True):
        for k in ("mfu", "mbu"):
            assert want[k] is not None and got[k] == pytest.approx(want[k], rel=1e-9)


def test_policies_priced_by_different_estimators_are_noted():
    """Under auto an engine model (vllm_v1) takes the roofline where sarathi takes a profile: one note."""
    from vidur.sweep.outputs import mixed_estimator_note

    prof = "profile (h200/meta-llama/Meta-Llama-3-8B (tp 1) at /p, cuda_graphs)"
    roof = "roofline (analytical; h200, compute 70%, memory 85%, cuda_graphs)"
    cal = "roofline (analytical; h200, compute 61%, memory 80%, cuda_graphs, calibrated on /p)"
    same = [{"policy": "sarathi", "estimator": prof}, {"policy": "vllm", "estimator": prof}]
    assert mixed_estimator_note(same) is None
    msg = mixed_estimator_note(same + [{"policy": "vllm_v1", "estimator": roof}])
    assert "profile: sarathi, vllm" in msg and "roofline: vllm_v1" in msg and "runtime_estimator" in msg
    msg = mixed_estimator_note([{"policy": "sarathi", "estimator": cal}, {"policy": "vllm_v1", "estimator": roof}])
    assert "roofline calibrated: sarathi" in msg and "roofline: vllm_v1" in msg and "\n" not in msg


def test_a_sweep_of_sarathi_and_vllm_v1_on_a_profiled_gpu_notes_the_two_estimators(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "sw"
    assert main(["sweep", str(root / "scenarios" / "quickstart.yaml"), "--policy", "sarathi,vllm_v1", "--qps", "2",
                 "-s", "cluster.device", "h200", "-s", "model", "meta-llama/Meta-Llama-3-8B",
                 "-s", "workload.num_requests", "40", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.txt").read_text()
    assert "policies were priced by different estimators" in report and "vllm_v1" in report
