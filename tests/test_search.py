"""Capacity search (``vidur search``): spec validation, the max-QPS bisection,
censored SLO checks, executors, resuming, outputs, evidence and bad input."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, SCENARIOS, TRACES, need_shared
from vidur.cli import main
from vidur.errors import VidurError
from vidur.search import load_search_spec, run_search, spec_from_dict
from vidur.search.cost import cost_fields, pareto_front
from vidur.search.maxqps import find_max_qps
from vidur.search.probe import evaluate
from vidur.search.spec import SLOTarget
from vidur.search.store import ResultStore

SMALL = SCENARIOS / "search-small.yaml"
VOLATILE = ("wall_s",)


def small_raw(**grid) -> dict:
    raw = yaml.safe_load(SMALL.read_text())
    raw["grid"].update(grid)
    return raw


def small_spec(**grid):
    return spec_from_dict(small_raw(**grid), path=SMALL)


def stable(rows: dict) -> dict:
    """Result rows without timing fields (they differ run to run)."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return {k: strip(v) for k, v in rows.items()}


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    """The small search, run once in-process."""
    out = tmp_path_factory.mktemp("search") / "serial"
    outcome = run_search(small_spec(), out, executor="serial", progress=False, log=lambda m: None)
    return outcome


# ------------------------------------------------------------ bisection


@pytest.mark.parametrize("threshold", [0.05, 3.7, 41.0, 900.0])
@pytest.mark.parametrize("tolerances", [[0.02], [0.04, 0.02]])
def test_max_qps_brackets_threshold(threshold, tolerances):
    seen = []

    def probe(q, stage):
        seen.append(stage)
        return q <= threshold * (1.03 if stage < len(tolerances) - 1 else 1.0)  # small probes are optimistic

    res = find_max_qps(probe, initial_qps=8.0, tolerances=tolerances)
    assert res.status == "ok"
    assert res.lo <= threshold < res.hi
    assert res.hi / res.lo - 1 <= tolerances[-1] + 1e-12
    assert res.probes == len(seen) <= 40


def test_max_qps_infeasible_capped_unresolved():
    assert find_max_qps(lambda q, s: False, initial_qps=5, tolerances=[0.02]).status == "infeasible"
    capped = find_max_qps(lambda q, s: True, initial_qps=5, tolerances=[0.02], max_qps=100)
    assert (capped.status, capped.lo) == ("capped", 100)
    short = find_max_qps(lambda q, s: q < 7, initial_qps=5, tolerances=[1e-6], max_probes=6)
    assert short.status == "unresolved" and 0 < short.lo < 7


# ------------------------------------------------------------ SLO checks


class _Rec:
    def __init__(self, arrival, first_sched, first_token, completion, output):
        f = lambda x: np.asarray(x, dtype=np.float64)
        self.requests = {"arrival": f(arrival), "first_scheduled": f(first_sched), "first_token": f(first_token),
                         "completion": f(completion), "output_tokens": np.asarray(output, dtype=np.int64),
                         "prompt_tokens": np.full(len(arrival), 100, dtype=np.int64)}
        self.itl_values = np.array([0.01])
        self.itl_counts = np.array([10])


def test_unfinished_requests_count_as_violations():
    nan = float("nan")
    slo = (SLOTarget("scheduling_delay", 0.5, 1.0),)
    # 3 of 4 requests never scheduled before the cap at t=100: the median delay is >= 90 s
    rec = _Rec([0, 1, 2, 3], [0.1, nan, nan, nan], [0.2, nan, nan, nan], [0.5, nan, nan, nan], [4, 4, 4, 4])
    ev = evaluate(rec, 100.0, slo)
    assert not ev["met"] and ev["unfinished"] == 3
    assert ev["slos"]["scheduling_delay_p50_s"]["value"] >= 90  # a proven lower bound
    # dropping unfinished requests (as a plain summary does) would have passed it
    done = _Rec([0], [0.1], [0.2], [0.5], [4])
    assert evaluate(done, 100.0, slo)["met"]


def test_tpot_unknown_for_running_requests_is_pessimistic():
    nan = float("nan")
    slo = (SLOTarget("tpot", 0.99, 0.1),)
    rec = _Rec([0, 0], [0, 0], [0.1, 0.1], [0.5, nan], [5, 5])
    assert not evaluate(rec, 10.0, slo)["met"]


def test_cost_and_pareto():
    c = cost_fields(36.0, 8, 2.5)
    assert c["cost_per_hour"] == 20.0 and c["qps_per_dollar"] == pytest.approx(1.8)
    assert c["dollars_per_million_requests"] == pytest.approx(20.0 / (36 * 3600) * 1e6)
    assert cost_fields(0.0, 8, 2.5)["qps_per_dollar"] is None
    pts = [(1.0, 1.0, "a"), (2.0, 3.0, "b"), (1.5, 0.5, "dominated"), (3.0, 2.0, "dominated2"), (None, 9, "x")]
    assert pareto_front(pts) == ["a", "b"]


# ------------------------------------------------------------ spec


def test_spec_expands_grid_and_budget():
    spec = spec_from_dict(
        {
            "model": "meta-llama/Meta-Llama-3-8B",
            "workload": {"lengths": {"name": "fixed"}},
            "grid": {
                "devices": ["a100", "h100"],
                "tensor_parallel": [1, 2, 16],
                "gpu_budget": 8,
                "replica_schedulers": [{"name": "sarathi", "chunk_size": [512, 1024]}, "vllm"],
            },
            "prices": {"a100": 1.5},
        }
    )
    assert len(spec.configs) == 2 * 3 * 3
    reps = {(c.device, c.tensor_parallel): c.replicas for c in spec.configs}
    assert reps[("a100", 1)] == 8 and reps[("h100", 2)] == 4
    assert all(c.skip_reason and "budget" in c.skip_reason for c in spec.configs if c.tensor_parallel == 16)
    assert spec.prices == {"a100": 1.5, "h100": pytest.approx(6.155)}
    assert [s.label for s in spec.slos] == ["scheduling_delay p99 <= 5 s"]  # the default SLO
    assert spec.probe_duration == 300.0


def test_slos_default_added_dropped_and_listed():
    raw = small_raw()
    raw["slos"] = {"ttft": [{"quantile": 0.9, "max_s": 1}, {"quantile": 0.99, "max_s": 3}], "tpot": {"max_s": 0.1}}
    cols = [s.column for s in spec_from_dict(raw).slos]
    assert cols == ["scheduling_delay_p99_s", "ttft_p90_s", "ttft_p99_s", "tpot_p99_s"]
    raw["slos"]["scheduling_delay"] = None
    assert "scheduling_delay_p99_s" not in [s.column for s in spec_from_dict(raw).slos]


def test_shipped_search_spec_loads_without_data_files():
    spec = load_search_spec(SCENARIOS / "search-llama3-8b.yaml")
    assert spec.workload["lengths"]["name"] == "lognormal"
    assert len(spec.configs) == 36
    assert {c.replicas for c in spec.configs} == {8, 4, 2}


def test_trace_path_resolves_from_the_spec_file(tmp_path, monkeypatch):
    """A relative trace path in a search spec is read from the spec's folder, not the working one."""
    need_shared()
    trace = TRACES / "splitwise_conv.csv"
    folder = tmp_path / "specs"
    folder.mkdir()
    rel = os.path.relpath(trace, folder)
    text = (SCENARIOS / "search-llama3-8b.yaml").read_text()
    old = "lengths: {name: lognormal, max_tokens: 8192}"
    assert old in text
    (folder / "spec.yaml").write_text(text.replace(old, f"lengths: {{name: trace, path: {rel}, max_tokens: 8192}}"))
    monkeypatch.chdir(tmp_path)  # rel does not resolve from here
    spec = load_search_spec(folder / "spec.yaml")
    assert Path(spec.workload["lengths"]["path"]).resolve() == trace.resolve()
    assert len(spec.configs) == 36


# ------------------------------------------------------------ end to end


def test_small_search_end_to_end(serial_run):
    o = serial_run
    out = o.out_dir
    status = {r["config"]: r["status"] for r in o.rows}
    assert sum(s == "ok" for s in status.values()) == 4
    skipped = [r for r in o.rows if r["status"] == "skipped"]
    assert len(skipped) == 4 and all("does not fit in one" in r["reason"] for r in skipped)
    best = o.best
    assert best is not None and best["max_qps"] > 0 and best["slos_met"]
    assert best["qps_per_dollar"] == max(r["qps_per_dollar"] or 0 for r in o.rows)
    assert best["cost_per_hour"] == pytest.approx(best["gpus"] * best["price_per_gpu_hour"])
    for name in ("results.jsonl", "results.csv", "pareto.csv", "report.txt", "best.yaml",
                 "pareto_scheduling_delay_p99.png", "pareto_ttft_p99.png"):
        assert (out / name).is_file(), name
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8
    assert {"max_qps", "qps_per_dollar", "cost_per_hour", "gpus", "scheduling_delay_p99_s", "ttft_p99_s"} <= set(table[0])
    import pyarrow.parquet as pq

    pt = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["config"] for r in pt] == [r["config"] for r in table]
    assert [r["max_qps"] for r in pt] == pytest.approx([float(r["max_qps"]) for r in table])
    report = (out / "report.txt").read_text()
    assert "best: " + best["config"] in report and "confirmed" in report
    # which estimator priced each configuration (the resolver's provenance), in the table and the report
    assert {r["estimator"] for r in table if r["status"] == "ok"} == {best["estimator"]} and best["estimator"]
    assert f"priced by the {best['estimator']} estimator" in report
    # best.yaml is a runnable scenario at the max QPS
    sc = yaml.safe_load((out / "best.yaml").read_text())
    assert sc["workload"]["arrival"]["qps"] == pytest.approx(best["max_qps"])


def test_evidence_max_qps_meets_and_ten_percent_more_fails(serial_run):
    from vidur.search import evidence_for

    o = serial_run
    assert o.evidence["confirmed"]
    spec = small_spec()
    ev = evidence_for(spec, spec.configs[o.best["index"]], o.best["max_qps"])
    assert ev["at_max"]["met"] and all(v["met"] for v in ev["at_max"]["slos"].values())
    assert not ev["above"]["met"] and any(not v["met"] for v in ev["above"]["slos"].values())
    assert ev["above"]["qps"] == pytest.approx(1.1 * o.best["max_qps"])


def test_process_pool_and_serial_give_identical_results(serial_run, tmp_path):
    o = run_search(small_spec(), tmp_path / "pool", executor="process", jobs=2, progress=False, log=lambda m: None)
    a = stable(ResultStore(serial_run.out_dir / "results.jsonl").load())
    b = stable(ResultStore(tmp_path / "pool" / "results.jsonl").load())
    assert a == b
    assert (serial_run.out_dir / "results.csv").read_text() == (tmp_path / "pool" / "results.csv").read_text()
    assert o.best["config"] == serial_run.best["config"]


def test_ray_gives_identical_results(serial_run, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_search(small_spec(), tmp_path / "ray", executor="ray", progress=False, log=lambda m: None)
    finally:
        ray.shutdown()
    a = stable(ResultStore(serial_run.out_dir / "results.jsonl").load())
    b = stable(ResultStore(tmp_path / "ray" / "results.jsonl").load())
    assert a == b


def test_resume_skips_finished_configurations(serial_run, tmp_path, monkeypatch):
    import vidur.search.executors as ex

    out = tmp_path / "resume"
    spec = small_spec()
    first = run_search(spec, out, executor="serial", progress=False, max_configs=3, evidence=False, log=lambda m: None)
    assert first.ran == 3 and first.pending == 5
    assert len(ResultStore(out / "results.jsonl").load()) == 3
    # an interrupt mid-write leaves a torn line: it is ignored
    with (out / "results.jsonl").open("a") as f:
        f.write('{"key": "torn", "stat')
    # interrupt after one more configuration: what finished is kept
    calls = []
    real = ex._guarded

    def flaky(task, host=None):
        if calls:
            raise KeyboardInterrupt
        calls.append(task["key"])
        return real(task, host)

    monkeypatch.setattr(ex, "_guarded", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_search(spec, out, executor="serial", progress=False, log=lambda m: None)
    assert len(ResultStore(out / "results.jsonl").load()) == 4
    monkeypatch.setattr(ex, "_guarded", real)
    last = run_search(spec, out, executor="serial", progress=False, evidence=False, log=lambda m: None)
    assert (last.ran, last.reused, last.pending) == (4, 4, 0)
    assert stable(ResultStore(out / "results.jsonl").load()) == stable(ResultStore(serial_run.out_dir / "results.jsonl").load())
    again = run_search(spec, out, executor="serial", progress=False, evidence=False, log=lambda m: None)
    assert again.ran == 0 and again.reused == 8
    # prices only scale the cost columns: everything is reused, the ranking follows the new prices
    raw = small_raw()
    raw["prices"] = {"a100": 0.5}
    cheap = run_search(spec_from_dict(raw, path=SMALL), out, executor="serial", progress=False, evidence=False,
                       log=lambda m: None)
    assert cheap.ran == 0 and cheap.reused == 8 and cheap.best["device"] == "a100"
    # a changed SLO is a different search: nothing is reused
    raw = small_raw()
    raw["slos"]["ttft"]["max_s"] = 2.0
    changed = run_search(spec_from_dict(raw, path=SMALL), out, executor="serial", progress=False,
                         max_configs=0, evidence=False, log=lambda m: None)
    assert changed.reused == 0 and changed.pending == 8


# ------------------------------------------------------------ CLI and bad input


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _spec_file(tmp_path, **changes) -> Path:
    raw = small_raw()
    raw["workload"]["lengths"] = {"name": "fixed", "prompt_tokens": 512, "output_tokens": 64}
    for k, v in changes.items():
        node = raw
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_cli_search_and_list(tmp_path, capsys):
    spec = _spec_file(tmp_path, **{"grid.devices": ["h100"], "grid.tensor_parallel": [1]})
    code, out, err = _cli(capsys, "search", spec, "--list")
    assert code == 0 and "2 configurations" in out
    code, out, err = _cli(capsys, "search", spec, "--out", tmp_path / "o", "--no-progress", "-j", "1",
                          "-s", "search.tolerance", "0.1")
    assert code == 0, err
    assert "best: h100" in out and "confirmed" in out
    assert (tmp_path / "o" / "results.csv").is_file()


@pytest.mark.parametrize(
    "changes, expect",
    [
        ({"grid.devices": []}, "grid.devices is empty"),
        ({"grid.replica_schedulers": []}, "grid.replica_schedulers is empty"),
        ({"slos.ttft_p99": {"max_s": 1}}, "valid metrics: ttft, tpot, e2e, normalized_e2e, scheduling_delay, itl"),
        ({"grid.tp": [1]}, "unknown key 'grid.tp'"),
        ({"search.tolerence": 0.1}, "unknown key 'search.tolerence' (did you mean 'tolerance'?)"),
        ({"search.operating_point": 1.5}, "search.operating_point must be in (0, 1]"),
        ({"slos.ttft": {"quantile": 0.9}}, "missing required key 'slos.ttft.max_s'"),
        ({"model": None}, "missing required key 'model'"),
        ({"model": "no-such/model"}, "unknown model 'no-such/model'"),
    ],
)
def test_bad_spec_is_one_line(tmp_path, capsys, changes, expect):
    code, _, err = _cli(capsys, "search", _spec_file(tmp_path, **changes), "--out", tmp_path / "o")
    assert code == 2
    assert err.count("\n") == 1 and expect in err, err


def test_device_without_price_is_one_line(tmp_path, capsys, vidur_host, vidur_register):
    from vidur.hardware.spec import DeviceSpec

    vidur_register(DeviceSpec(name="nopricegpu", memory_bytes=80 << 30, peak_flops=1e15, memory_bandwidth=3e12))
    spec = _spec_file(tmp_path, **{"grid.devices": ["nopricegpu"], "grid.nodes": {"nopricegpu": "dgx_h100"}})
    code, _, err = _cli(capsys, "search", spec, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    assert "device 'nopricegpu' has no price; set prices.nopricegpu" in err
    # a price in the spec fixes it
    p = yaml.safe_load(spec.read_text())
    p["prices"] = {"nopricegpu": 4.0}
    spec.write_text(yaml.safe_dump(p))
    assert _cli(capsys, "search", spec, "--list")[0] == 0


def test_unreachable_ray_address_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    code, _, err = _cli(capsys, "search", _spec_file(tmp_path), "--executor", "ray", "--address",
                          f"127.0.0.1:{port}", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    assert "cannot reach the Ray cluster at 127.0.0.1" in err


def test_address_needs_ray_executor(tmp_path, capsys):
    code, _, err = _cli(capsys, "search", _spec_file(tmp_path), "--address", "1.2.3.4:6379")
    assert code == 2 and "--address needs --executor ray" in err


def test_spec_errors_in_python_api():
    with pytest.raises(VidurError, match="set grid.replicas or grid.gpu_budget"):
        small_spec(gpu_budget=8)
    with pytest.raises(VidurError, match="no qps to sweep"):
        raw = small_raw()
        raw["workload"]["arrival"] = "static"
        spec_from_dict(raw)
    assert not math.isnan(small_spec().drain_s)
    assert REPO.is_dir()


def test_a_missing_trace_file_is_an_input_error_not_an_slo_miss(tmp_path, capsys):
    """Issue #15 item 3d: exit 2 with one line, before any configuration is simulated."""
    raw = small_raw()
    raw["workload"]["lengths"] = {"name": "trace", "path": "missing-trace.csv"}
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(VidurError, match="trace file .*missing-trace.csv does not exist"):
        load_search_spec(spec_path)
    out = tmp_path / "o"
    assert main(["search", str(spec_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------ resume key and lock (issue #16, item 2)


def _cpu_profile_spec(tmp_path):
    """A one-configuration search priced by a copy of the shipped H200 profile."""
    import shutil

    prof = tmp_path / "profile"
    shutil.copytree(REPO / "vidur" / "data" / "profiles" / "h200" / "meta-llama" / "Meta-Llama-3-8B", prof)
    raw = {
        "model": "meta-llama/Meta-Llama-3-8B",
        "workload": {"lengths": {"name": "fixed", "prompt_tokens": 256, "output_tokens": 16}, "duration": 5},
        "slos": {"scheduling_delay": {"quantile": 0.99, "max_s": 0.5}},

        "runtime_estimator": {"name": "profile", "profile": str(prof)},
        "grid": {"devices": ["h200"], "tensor_parallel": [1], "replicas": [1], "replica_schedulers": ["sarathi"],
                 "global_schedulers": ["round_robin"]},
    }
    return spec_from_dict(raw), prof


def test_resume_key_covers_the_profile_data_and_the_code(tmp_path, monkeypatch):
    """A re-fitted profile or another simulator version is a different result: never reused."""
    import vidur.search.fingerprint as F
    from vidur.search.driver import canonical_key

    spec, prof = _cpu_profile_spec(tmp_path)
    cfg = spec.configs[0]
    key = canonical_key(spec, cfg)
    assert canonical_key(spec, cfg) == key  # stable
    fitted = prof / "fitted.json"
    fitted.write_text(fitted.read_text().replace("\n", "\n ", 1))  # the same profile, other bytes
    refit = canonical_key(spec, cfg)
    assert refit != key
    monkeypatch.setattr(F, "code_version", lambda: "0.0.0+another")
    assert canonical_key(spec, cfg) not in (key, refit)


def test_resume_key_covers_what_a_wrapping_estimator_wraps(vidur_host, vidur_register, monkeypatch):
    """The wrapper's own config says ``inner: auto``; the key also holds what that resolved to
    and with which config, so another inner estimator is never priced from a stale result."""
    import attrs

    from vidur.estimate.base import Offer
    from vidur.estimate.roofline import RooflineEstimator
    from vidur.estimate.wrap import WrappingEstimator
    from vidur.search.driver import canonical_key

    class Wrap(WrappingEstimator):
        """Prices exactly as its inner estimator."""

        name = "wrap_est"

    class First(RooflineEstimator):
        """Roofline under another name, preferred by auto (no profile, no calibration)."""

        name = "first_est"
        auto_priority = 1000

    class Second(First):
        """The same, preferred over ``first_est``."""

        name = "second_est"
        auto_priority = 2000

    vidur_register(Wrap)
    vidur_register(First)
    raw = small_raw(devices=["h100"], tensor_parallel=[1], replicas=[1], replica_schedulers=["vllm"])
    raw["runtime_estimator"] = {"name": "wrap_est", "inner": "auto"}
    spec = spec_from_dict(raw, path=SMALL)
    (cfg,) = spec.configs
    key = canonical_key(spec, cfg, vidur_host)
    assert canonical_key(spec, cfg, vidur_host) == key  # stable
    monkeypatch.setattr(First, "can_price", classmethod(lambda cls, target: Offer.accept(
        attrs.evolve(cls.Config(), compute_efficiency=0.5), "slower GEMMs")))
    other_config = canonical_key(spec, cfg, vidur_host)
    assert other_config != key
    vidur_register(Second)  # auto now resolves the inner to another estimator
    assert canonical_key(spec, cfg, vidur_host) not in (key, other_config)


def test_resumed_search_reruns_what_a_changed_profile_prices(tmp_path):
    spec, prof = _cpu_profile_spec(tmp_path)
    out = tmp_path / "out"
    first = run_search(spec, out, executor="serial", progress=False, evidence=False, log=lambda m: None)
    assert first.ran == 1
    again = run_search(spec, out, executor="serial", progress=False, evidence=False, log=lambda m: None)
    assert (again.ran, again.reused) == (0, 1)
    csv_file = prof / "tp1.csv"
    lines = csv_file.read_text().splitlines()
    csv_file.write_text("\n".join(lines[:-1]) + "\n")  # one measurement fewer
    (prof / "fitted.json").unlink()  # refitted from the changed data
    changed = run_search(spec, out, executor="serial", progress=False, evidence=False, log=lambda m: None)
    assert (changed.ran, changed.reused) == (1, 0)


def test_two_searches_on_one_out_directory_do_not_both_run(tmp_path, capsys):
    from vidur.search.driver import _lock

    out = tmp_path / "o"
    out.mkdir()
    held = _lock(out)  # another search holds it (flock: per open file, so this process can test it)
    try:
        code, _, err = _cli(capsys, "search", _spec_file(tmp_path), "--out", out, "--executor", "serial")
        assert code == 2 and err.count("\n") == 1, err
        assert f"another vidur search (pid {__import__('os').getpid()}) is writing to {out}" in err
        assert not (out / "results.jsonl").exists()
    finally:
        held.close()
    code, _, err = _cli(capsys, "search", _spec_file(tmp_path), "--out", out, "--executor", "serial",
                        "--max-configs", "0")
    assert code == 0, err



def test_ray_core_logs_are_kept_off_the_terminal_while_joining(capfd):
    """Ray's core logs a retry a second on file descriptor 2 while it cannot join a cluster: hidden."""
    import os

    from vidur.search.executors import _quiet_stderr

    with _quiet_stderr():
        os.write(2, b"[W gcs_client.cc:210] Failed to get cluster ID from GCS server\n")
    os.write(2, b"after\n")
    _, err = capfd.readouterr()
    assert err == "after\n"


# ------------------------------------------------------------ Pareto frontier against its definition (issue #16, item 9)

def _dominates(a, b) -> bool:
    """``a`` is at least as good as ``b`` in both (latency lower, QPS per dollar higher) and better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=25))
def test_pareto_front_is_the_brute_force_frontier(values):
    """Small integer grids give many ties and duplicates: the frontier has every non-dominated value once,
    no dominated point and no tie twice, in latency order."""
    points = [(float(lat), float(q), i) for i, (lat, q) in enumerate(values)]
    front = pareto_front(points)
    got = [values[i] for i in front]
    expected = {v for v in values if not any(_dominates(w, v) for w in values)}
    assert len(got) == len(set(got)) == len(expected)  # each frontier value once
    assert set(got) == expected
    assert [v[0] for v in got] == sorted(v[0] for v in got)
    for i in front:  # the first item of each tie is kept
        assert values.index(values[i]) == i


def test_probe_rate_replaces_a_trace_time_scale():
    """A probe sets the rate through the one rate mechanism: a trace's time_scale gives way to qps."""
    from vidur.search.probe import probe_scenario

    base = {"workload": {"arrival": {"name": "trace", "path": "t.csv", "time_scale": 2.0}, "num_requests": 10}}
    raw = probe_scenario(base, 3.0, None, 10, None)
    assert raw["workload"]["arrival"] == {"name": "trace", "path": "t.csv", "qps": 3.0}
    assert base["workload"]["arrival"]["time_scale"] == 2.0


def test_an_infeasible_configuration_says_which_slo_failed_and_its_value(tmp_path):
    """Issue #15 item 3d: no configuration can reach TTFT p99 <= 1 us; each says so, with the value
    reached at its lowest probe, in the reason, the results column and the report."""
    raw = small_raw(devices=["h100"], tensor_parallel=[1], replica_schedulers=["vllm"])
    raw["slos"]["ttft"] = {"quantile": 0.99, "max_s": 1e-6}
    raw["search"].update(min_qps=0.5, initial_qps=1.0)
    o = run_search(spec_from_dict(raw, path=SMALL), tmp_path / "o", executor="serial", progress=False,
                   evidence=False, log=lambda m: None)
    (row,) = o.rows
    assert row["status"] == "infeasible" and o.best is None
    res = ResultStore(tmp_path / "o" / "results.jsonl").load()[row["key"]]
    value, bound = res["infeasible_slos"]["ttft_p99_s"]
    assert bound == 1e-6 and value > bound
    assert "scheduling_delay_p99_s" not in res["infeasible_slos"]  # that one holds at 0.5 QPS
    assert "ttft p99 reached" in row["reason"] and "probe at 0.5 QPS" in row["reason"]
    assert row["infeasible_slos"].startswith("ttft_p99_s=")
    with (tmp_path / "o" / "results.csv").open() as f:
        assert next(csv.DictReader(f))["infeasible_slos"] == row["infeasible_slos"]
    assert row["reason"] in (tmp_path / "o" / "report.txt").read_text()


# ------------------------------------------------------------ item 3f: fleets, $ per token, routers


@settings(max_examples=200, deadline=None)
@given(target=st.floats(0.01, 1e4), max_qps=st.floats(0.01, 1e3), replicas=st.integers(1, 16), tp=st.sampled_from([1, 2, 4]))
def test_fleet_is_the_fewest_replicas_that_carry_the_target(target, max_qps, replicas, tp):
    from vidur.search.cost import fleet_fields

    f = fleet_fields(target, max_qps, replicas, replicas * tp, 2.0)
    per_replica = max_qps / replicas
    n = f["fleet_replicas"]
    assert n >= 1 and n * per_replica >= target * (1 - 1e-9)
    assert n == 1 or (n - 1) * per_replica < target
    assert f["fleet_gpus"] == n * tp and f["fleet_cost_per_hour"] == pytest.approx(n * tp * 2.0)


def test_cost_per_million_tokens_is_per_request_cost_over_tokens():
    c = cost_fields(10.0, 2, 3.6, tokens_per_request=500.0)
    assert c["dollars_per_million_requests"] == pytest.approx(7.2 / 36000 * 1e6)
    assert c["dollars_per_million_tokens"] == pytest.approx(c["dollars_per_million_requests"] / 500.0)
    assert cost_fields(10.0, 2, 3.6)["dollars_per_million_tokens"] is None


def test_cheapest_fleet_mode_reuses_results_and_ranks_by_fleet_cost(serial_run, tmp_path):
    import shutil

    best = serial_run.best
    assert best["tokens_per_request"] == 512 + 64  # fixed lengths
    assert best["dollars_per_million_tokens"] == pytest.approx(best["dollars_per_million_requests"] / 576)
    out = tmp_path / "fleet"
    shutil.copytree(serial_run.out_dir, out)
    raw = small_raw()
    raw["search"]["target_qps"] = 100.0
    o = run_search(spec_from_dict(raw, path=SMALL), out, executor="serial", progress=False, evidence=False,
                   log=lambda m: None)
    assert o.ran == 0 and o.reused == len(serial_run.rows)  # target_qps changes no simulation: all reused
    ok = [r for r in o.rows if r["slos_met"]]
    assert ok and all(r["fleet_replicas"] * r["max_qps"] / r["replicas"] >= 100.0 for r in ok)
    report = (out / "report.txt").read_text()
    assert "cheapest fleet for 100 QPS" in report and "per million tokens" in report
    section = report.split("cheapest fleet for 100 QPS")[1].split("\n\n")[0]
    costs = [r["fleet_cost_per_hour"] for r in sorted(ok, key=lambda r: r["fleet_cost_per_hour"])]
    order = [line.strip().split("  ")[0] for line in section.splitlines()[3:]]
    assert order == [r["config"] for r in sorted(ok, key=lambda r: (r["fleet_cost_per_hour"], r["fleet_gpus"], r["index"]))]
    assert costs == sorted(costs)


def test_router_options_are_in_labels_and_a_column():
    from vidur.search.driver import _table_row

    spec = small_spec(devices=["h100"], tensor_parallel=[1], replicas=[2], replica_schedulers=["vllm"],
                      global_schedulers=[{"name": "prefix_aware", "prefix_weight": [1.0, 3.0]}])
    labels = [c.label for c in spec.configs]
    assert len(set(labels)) == 2 and all("prefix_aware(prefix_weight=" in x for x in labels)
    cols = {_table_row(spec, c, None)["router_config"] for c in spec.configs}
    assert cols == {'{"prefix_weight": 1.0}', '{"prefix_weight": 3.0}'}


def test_an_in_process_plugin_is_refused_for_worker_processes(tmp_path, capsys, vidur_host, vidur_register):
    from vidur.hardware.spec import DeviceSpec

    vidur_register(DeviceSpec(name="inprocgpu", memory_bytes=80 << 30, peak_flops=1e15, memory_bandwidth=3e12))
    spec = _spec_file(tmp_path, **{"grid.devices": ["inprocgpu"], "grid.tensor_parallel": [1],
                                   "grid.nodes": {"inprocgpu": "dgx_h100"}, "prices": {"inprocgpu": 2.0}})
    code, _, err = _cli(capsys, "search", spec, "--out", tmp_path / "o", "-j", "2", "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "device 'inprocgpu' is registered in this process only" in err and "serial" in err


def test_the_in_process_check_looks_inside_a_wrapping_estimator(vidur_host, vidur_register):
    """A wrapper's ``inner`` (the scenario's, else its Config's default) is carried to workers too."""
    import attrs

    from vidur.estimate.roofline import RooflineEstimator
    from vidur.estimate.wrap import WrapperConfig, WrappingEstimator
    from vidur.search.executors import check_plugins_reach_workers, in_process_plugins

    class Local(RooflineEstimator):
        """Roofline under another name (a stand-in for a plugin's estimator)."""

        name = "local_est"

    @attrs.frozen(kw_only=True)
    class OverLocal(WrapperConfig):
        inner: str = "local_est"

    class Wrap(WrappingEstimator):
        """A wrapper whose default inner is the in-process estimator."""

        name = "wrap_est"
        Config = OverLocal

    vidur_register(Local)
    vidur_register(Wrap)
    est = "runtime estimator"
    assert in_process_plugins([{"runtime_estimator": {"name": "wrap_est", "inner": "local_est"}}], vidur_host) == [
        f"{est} 'wrap_est'", f"{est} 'local_est'"]
    assert in_process_plugins([{"runtime_estimator": "wrap_est"}], vidur_host) == [
        f"{est} 'wrap_est'", f"{est} 'local_est'"]  # the Config's default inner
    assert in_process_plugins([{"runtime_estimator": {"name": "wrap_est", "inner": "roofline"}}], vidur_host) == [
        f"{est} 'wrap_est'"]
    assert in_process_plugins([{"runtime_estimator": {"name": "wrap_est", "inner": "auto"}}], vidur_host) == [
        f"{est} 'wrap_est'"]
    with pytest.raises(VidurError, match="'local_est' are registered in this process only"):
        check_plugins_reach_workers([{"runtime_estimator": "wrap_est"}] * 2, "process", 2, vidur_host)


# ------------------------------------------------------------ item 3e: the operating point


def test_pareto_latencies_are_measured_at_the_operating_point(serial_run):
    o = serial_run
    ok = [r for r in o.rows if r["status"] == "ok"]
    assert ok
    for r in ok:
        assert r["op_qps"] == pytest.approx(0.9 * r["max_qps"])
        assert r["op_ttft_p99_s"] is not None and r["op_scheduling_delay_p99_s"] is not None
    with (o.out_dir / "pareto.csv").open() as f:
        front = list(csv.DictReader(f))
    by_index = {r["index"]: r for r in o.rows}
    for p in front:
        r = by_index[int(p["index"])]
        assert float(p["value_s"]) == pytest.approx(r["op_" + p["metric"]])
        assert float(p["operating_point"]) == 0.9 and float(p["operating_qps"]) == pytest.approx(r["op_qps"])
    assert "latency at 90 % of max QPS" in (o.out_dir / "report.txt").read_text()


def test_operating_point_one_is_the_max_qps_probe(tmp_path):
    raw = small_raw(devices=["h100"], tensor_parallel=[1], replica_schedulers=["vllm"])
    raw["search"]["operating_point"] = 1.0
    o = run_search(spec_from_dict(raw, path=SMALL), tmp_path / "o", executor="serial", progress=False,
                   evidence=False, log=lambda m: None)
    (r,) = o.rows
    assert r["status"] == "ok" and r["op_qps"] == r["max_qps"]
    assert r["op_ttft_p99_s"] == r["ttft_p99_s"] and r["op_e2e_p99_s"] == r["e2e_p99_s"]


# ------------------------------------------------------------ item 3c: seeds and thin tails


def test_seeds_give_max_qps_with_an_interval_and_resume_per_seed(tmp_path):
    from vidur.metrics.intervals import mean_interval

    raw = small_raw(devices=["h100"], tensor_parallel=[1], replica_schedulers=["vllm"])
    raw["seeds"] = [0]
    del raw["seed"]
    run = lambda r: run_search(spec_from_dict(r, path=SMALL), tmp_path / "o", executor="serial", progress=False,
                               evidence=False, log=lambda m: None)
    one = run(raw)
    raw["seeds"] = [0, 1, 2]
    o = run(raw)
    assert o.reused == 1 and o.ran == 2  # seed 0's search is reused; seeds 1 and 2 are new
    (row,) = o.rows
    assert row["max_qps"] == one.rows[0]["max_qps"]  # the row's answer is the first seed's
    per_seed = sorted(r["max_qps"] for r in ResultStore(tmp_path / "o" / "results.jsonl").load().values())
    iv = mean_interval(per_seed)
    assert row["max_qps_mean"] == pytest.approx(iv.mean) and row["seeds_ok"] == 3
    assert row["max_qps_ci_low"] == pytest.approx(iv.low) and row["max_qps_ci_high"] == pytest.approx(iv.high)
    assert "max QPS over seeds 0, 1, 2: mean" in (tmp_path / "o" / "report.txt").read_text()


@pytest.mark.parametrize("change, expect", [
    ({"seeds": [1, 2]}, "seed 0 is not the first of seeds"),
    ({"seeds": [1, 1], "seed": None}, "seeds lists a seed twice"),
    ({"seeds": [], "seed": None}, "seeds is empty"),
])
def test_bad_seeds_are_one_line(change, expect):
    raw = small_raw()
    raw.update(change)
    if raw.get("seed") is None:
        raw.pop("seed", None)
    with pytest.raises(VidurError, match=expect):
        spec_from_dict(raw, path=SMALL)


def test_a_tail_slo_on_too_few_requests_is_warned_with_the_count_and_the_fix():
    from vidur.search.outputs import thin_tail_warning

    spec = small_spec()  # p99 SLOs
    row = lambda n, status="ok": {"status": status, "probe_requests": n, "config": f"cfg{n}"}
    assert thin_tail_warning(spec, [row(1000), row(5000), row(10, "skipped")]) is None
    msg = thin_tail_warning(spec, [row(1000), row(137), row(400)])
    assert "as few as 137 requests" in msg and "cfg137" in msg and "needs about 1,000" in msg
    assert "lengthen the probes" in msg and "\n" not in msg


def test_configurations_priced_on_different_bases_are_warned():
    """A profile for one device, the roofline's defaults for another: one line naming both groups."""
    from vidur.search.outputs import mixed_pricing_warning

    def row(device, tp, est, src=None, status="ok"):
        return {"device": device, "tensor_parallel": tp, "estimator": est, "estimator_source": src, "status": status}

    same = [row("a100", 1, "roofline"), row("h100", 2, "roofline"), row("h200", 1, "profile", "/p", "skipped")]
    assert mixed_pricing_warning(same) is None  # a skipped configuration was not priced
    msg = mixed_pricing_warning([row("a100", 1, "roofline"), row("h200", 1, "profile", "/p"), row("h200", 2, "profile", "/p"),
                                 row("h100", 4, "roofline", "/p")])
    assert "profile: h200 TP1, h200 TP2" in msg and "roofline defaults: a100 TP1" in msg
    assert "roofline calibrated: h100 TP4" in msg and "runtime_estimator" in msg and "\n" not in msg


# ------------------------------------------------------------ item 3b: steady state


@settings(max_examples=50, deadline=None)
@given(n=st.integers(20, 200), base=st.floats(0.0, 2.0), growth=st.floats(0.0, 1.0))
def test_a_probe_whose_later_arrivals_wait_longer_is_not_steady(n, base, growth):
    """Scheduling delay base + growth x arrival time (a queue growing by `growth` s per s):
    steady exactly when the second half's mean exceeds the first half's by no more than the tolerance."""
    from vidur.search.probe import STEADY_FLOOR, STEADY_TOLERANCE

    arrival = np.linspace(0.0, 10.0, n)
    delay = base + growth * arrival
    rec = _Rec(arrival, arrival + delay, arrival + delay + 0.01, arrival + delay + 1.0, [4] * n)
    st_ = evaluate(rec, 1e6, (SLOTarget("scheduling_delay", 0.99, 5.0),))["steady"]
    mid = 5.0
    first, second = delay[arrival <= mid].mean(), delay[arrival > mid].mean()
    assert st_["first_half_s"] == pytest.approx(first) and st_["second_half_s"] == pytest.approx(second)
    assert st_["ok"] == (second - first <= max(STEADY_TOLERANCE * first, STEADY_FLOOR * 5.0))
    if growth == 0:
        assert st_["ok"]


@pytest.mark.parametrize("later, expect", [
    ([{"met": True, "steady": {"ok": True}}], {"ok": True, "doublings": 1, "failed_longer": False}),
    ([{"met": False, "steady": {"ok": True}}], {"ok": False, "doublings": 1, "failed_longer": True}),
    ([{"met": True, "steady": {"ok": False}}] * 2, {"ok": False, "doublings": 2, "failed_longer": False}),
])
def test_an_unsteady_max_qps_probe_is_lengthened_at_most_twice(monkeypatch, later, expect):
    from vidur.search import worker

    calls = []

    def fake_probe(base, qps, *, duration, num_requests, drain, slos, host=None):
        calls.append(duration)
        return dict(later[len(calls) - 1], slos={}, qps=qps)

    monkeypatch.setattr(worker, "run_probe", fake_probe)
    task = {"scenario": {}, "duration": 20.0, "requests": None, "min_requests": 1, "drain": 60.0}
    verdict, longer = worker._steady_guard(task, 10.0, {"steady": {"ok": False}}, (), None)
    assert {k: verdict[k] for k in expect} == expect
    assert calls == [40.0, 80.0][: len(later)]  # 2x, then 4x the window, never more
    assert (longer is not None) == expect["ok"]
    # a steady probe is not lengthened
    assert worker._steady_guard(task, 10.0, {"steady": {"ok": True}}, (), None) == (
        {"ok": True, "doublings": 0, "first_half_s": None, "second_half_s": None, "failed_longer": False}, None)


def test_the_report_says_not_steady_instead_of_confirmed(tmp_path, monkeypatch):
    from vidur.search import probe

    monkeypatch.setattr(probe, "STEADY_TOLERANCE", -1.0)  # every probe looks unsteady
    monkeypatch.setattr(probe, "STEADY_FLOOR", -1.0)
    raw = small_raw(devices=["h100"], tensor_parallel=[1], replica_schedulers=["vllm"])
    o = run_search(spec_from_dict(raw, path=SMALL), tmp_path / "o", executor="serial", progress=False,
                   log=lambda m: None)
    (row,) = o.rows
    assert row["steady"] is False and row["steady_doublings"] in (1, 2)
    report = (tmp_path / "o" / "report.txt").read_text()
    assert "not steady" in report and "confirmed" not in report


def test_the_cheapest_fleet_is_simulated_at_the_target(serial_run, tmp_path):
    import shutil

    out = tmp_path / "fleet"
    shutil.copytree(serial_run.out_dir, out)
    raw = small_raw()
    raw["search"]["target_qps"] = 60.0
    o = run_search(spec_from_dict(raw, path=SMALL), out, executor="serial", progress=False, log=lambda m: None)
    chk = o.fleet_check
    cheapest = min((r for r in o.rows if r["slos_met"]), key=lambda r: (r["fleet_cost_per_hour"], r["fleet_gpus"], r["index"]))
    assert chk["qps"] == 60.0 and f"x{cheapest['fleet_replicas']} " in chk["config"]
    assert chk["requests"] > 0 and set(chk["slos"]) == {"scheduling_delay_p99_s", "ttft_p99_s"}
    assert f"checked: {chk['config']} simulated at 60 QPS" in (out / "report.txt").read_text()
