"""The summarised batch log (issue #14 item 2): ``metrics.batch_log: summary`` gives
the same summary numbers as the full log, memory flat in the iterations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.engine.run_scenario import run_scenario
from vidur.engine.simulation import Simulation
from vidur.errors import VidurError
from vidur.metrics.batch_summary import (
    AUTO_FULL_MAX_REQUESTS,
    NCOL,
    SAMPLE_PER_REPLICA,
    BatchSummary,
    choose_batch_log,
    hist_percentile,
    merge_batch_summaries,
)
from vidur.metrics.records import BATCH_COLUMNS
from vidur.metrics.summary import summarize
from vidur.metrics.tablefile import read_run_table
from vidur.scenario import load_scenario

#: keys whose values differ between the modes by design
_SKIP = {"wall_seconds", "definitions", "operator_time_share", "batch_log"}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)


def _same(a, b, path=""):
    """Integers, strings and None equal; floats equal to 1e-12 relative (sums added in another order)."""
    if isinstance(a, dict):
        assert set(a) - _SKIP == set(b) - _SKIP, path
        for k in set(a) - _SKIP:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0), (path, a, b)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def _run(name, n, mode, tmp_path=None, **extra):
    settings_ = [("workload.num_requests", str(n)), ("metrics.batch_log", mode), ("simulation.progress", "false")]
    settings_ += [(k.replace("__", "."), str(v)) for k, v in extra.items()]
    sc = load_scenario(f"scenarios/{name}.yaml", settings=settings_)
    out = None if tmp_path is None else tmp_path / mode
    return run_scenario(sc, out)


CASES = {
    "single replica": ("quickstart", 400, {}),
    "multi replica": ("multi-replica", 600, {}),
    "max_time cut": ("multi-replica", 600, {"simulation__max_time": 25}),
    "prefix caching": ("shared-prefix", 300, {}),
    "no fast-forward": ("quickstart", 300, {"simulation__fast_forward": "false"}),
    "closed loop": ("multi-turn", 200, {}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("flush_rows", [16384, 37])
def test_summary_mode_gives_the_full_logs_numbers(case, flush_rows, monkeypatch):
    """Exact for counts, histograms and percentiles; floats (busy time, KV, FLOPs) to 1e-12
    relative, their terms added in another order. A tiny flush size folds many chunks,
    with batches pending past the latest completion."""
    import vidur.engine.log as log
    import vidur.engine.loop as loop

    monkeypatch.setattr(log, "FLUSH_ROWS", flush_rows)
    monkeypatch.setattr(loop, "FLUSH_VALUES", flush_rows * NCOL)
    import vidur.engine.fastforward as ff

    monkeypatch.setattr(ff, "FLUSH_VALUES", flush_rows * NCOL)
    monkeypatch.setattr(ff, "FLUSH_RUN_VALUES", flush_rows * 2)
    name, n, extra = CASES[case]
    _, full = _run(name, n, "full", **extra)
    res, folded = _run(name, n, "summary", **extra)
    assert full["run"]["batch_log"]["mode"] == "full" and folded["run"]["batch_log"]["mode"] == "summary"
    assert res.records.batch_summary is not None
    _same(full, folded)
    if case == "max_time cut":
        assert full["requests"]["unfinished"] > 0
    assert set(folded["operator_time_share"]) == set(full["operator_time_share"])
    assert "sample of a sample" in folded["definitions"]["operator_time_share"]


def test_summary_run_dir_has_time_series_and_histograms(tmp_path):
    res, summary = _run("multi-replica", 300, "summary", tmp_path)
    out = tmp_path / "summary"
    assert not (out / "batches.parquet").exists()
    ts = read_run_table(out, "batch_timeseries")
    assert set(ts["replica"].astype(int)) == {0, 1, 2, 3}
    assert ts["batches"].sum() == summary["num_batches"]
    width = ts["width"][0]
    busy = np.bincount(ts["replica"].astype(int), weights=ts["busy_fraction"] * width)
    for r in summary["replicas"]:  # busy time per bucket adds up to the batches' spans (ns rounding)
        assert busy[r["replica"]] >= r["busy_seconds"] - 1e-6 * r["num_batches"]
    hist = read_run_table(out, "batch_histograms")
    assert hist["count"][hist["metric"] == "batch_size"].sum() == summary["num_batches"]
    assert hist["count"][hist["metric"] == "tokens_per_batch"].sum() == summary["num_batches"]
    # every reader of batch rows refuses in one line
    with pytest.raises(VidurError, match="metrics.batch_log full"):
        res.records.batches["start"]
    with pytest.raises(VidurError, match="no flops_fn"):
        summarize(res.records, flops_fn=lambda c, i: 1.0)
    assert res.records.num_batches == summary["num_batches"]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_run_tables_read_back_the_same_in_either_format(tmp_path, fmt):
    """requests/batches tables (full log) and the summary-mode tables, Parquet or CSV: the
    one reader gives the records' columns back (CSV: numbers to the nanosecond)."""
    from vidur.metrics.summary import request_metrics

    for mode in ("full", "summary"):
        out = tmp_path / f"{fmt}-{mode}"
        res, _ = _run("multi-replica", 150, mode, metrics__table_format=fmt)
        from vidur.metrics.outputs import write_run_dir

        write_run_dir(out, "x: 1\n", {}, res.records, chrome_trace=False, plots=False, table_format=fmt)
        names = {p.name for p in out.iterdir()}
        tables = {"requests", "batches"} if mode == "full" else {"requests", "batch_timeseries", "batch_histograms"}
        assert {n for n in names if n.endswith("." + fmt)} == {f"{t}.{fmt}" for t in tables}
        req = read_run_table(out, "requests")
        for c, v in {**res.records.requests, **request_metrics(res.records)}.items():
            if c == "completed":
                continue
            np.testing.assert_allclose(req[c], v, rtol=0, atol=1e-9 if fmt == "csv" else 0, err_msg=c)
        if mode == "full":
            bt = read_run_table(out, "batches")
            for c, v in res.records.batches.items():
                np.testing.assert_allclose(bt[c], v, rtol=0, atol=1e-9 if fmt == "csv" else 0, err_msg=c)
    with pytest.raises(VidurError, match="has no batches table"):
        read_run_table(tmp_path / f"{fmt}-summary", "batches")


def test_summary_mode_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from vidur.metrics.outputs import write_plots

    res, _ = _run("multi-replica", 200, "summary")
    names = write_plots(tmp_path / "plots", res.records)
    assert "batch_size.png" in names and "kv_utilization.png" in names


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"metrics__chrome_trace": "true"}, "metrics.batch_log: summary cannot serve metrics.chrome_trace"),
        ({"cluster__pipeline_parallel": 2}, "metrics.batch_log: summary cannot serve pipeline_parallel > 1"),
    ],
)
def test_summary_mode_is_refused_where_rows_are_needed(extra, needle):
    settings_ = [("workload.num_requests", "50"), ("metrics.batch_log", "summary")]
    settings_ += [(k.replace("__", "."), str(v)) for k, v in extra.items()]
    with pytest.raises(VidurError) as e:
        Simulation(load_scenario("scenarios/quickstart.yaml", settings=settings_))
    assert needle in str(e.value) and "set metrics.batch_log: full" in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_batch_log_value_is_one_line(capsys, tmp_path):
    from vidur.cli import main

    code = main(["run", "scenarios/quickstart.yaml", "--no-progress", "--out", str(tmp_path / "o"),
                 "-s", "metrics.batch_log", "rows"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "metrics.batch_log must be one of auto, full, summary" in err
    assert "Traceback" not in err


def test_auto_decides_on_the_request_count():
    assert choose_batch_log("auto", AUTO_FULL_MAX_REQUESTS, pp=1, chrome_trace=False)[0] == "full"
    mode, why = choose_batch_log("auto", AUTO_FULL_MAX_REQUESTS + 1, pp=1, chrome_trace=False)
    assert mode == "summary" and "100,001 requests > 100,000" in why
    assert choose_batch_log("auto", 10**7, pp=2, chrome_trace=False)[0] == "full"
    assert choose_batch_log("auto", 10**7, pp=1, chrome_trace=True)[0] == "full"
    assert choose_batch_log("full", 10**7, pp=1, chrome_trace=False)[0] == "full"


# ---------------------------------------------------------------- percentiles from histograms


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 5000), min_size=1, max_size=300),
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=6),
)
def test_hist_percentile_is_numpys_bit_for_bit(sample, qs):
    x = np.array(sample, dtype=np.int64)
    values, counts = np.unique(x, return_counts=True)
    got = hist_percentile(values, counts, qs)
    want = np.percentile(x, qs)
    assert got.tolist() == want.tolist()
    assert hist_percentile(values, counts, (50, 99)).tolist() == np.percentile(x.astype(float), (50, 99)).tolist()


# ---------------------------------------------------------------- folding and merging


def _rows(rng, n, replicas, t_max=50.0):
    """Random non-overlapping batches per replica, in BATCH_COLUMNS order."""
    out = []
    for r in replicas:
        d = rng.uniform(0.001, 0.4, n)
        gap = rng.uniform(0, 0.05, n) * (rng.random(n) < 0.3)
        end = np.cumsum(d + gap)
        start = end - d
        rows = np.zeros((n, NCOL))
        col = {c: i for i, c in enumerate(BATCH_COLUMNS)}
        rows[:, col["replica"]] = r
        rows[:, col["start"]] = start
        rows[:, col["end"]] = end
        rows[:, col["num_prefill"]] = rng.integers(0, 2, n)
        rows[:, col["num_decode"]] = rng.integers(0, 64, n)
        rows[:, col["num_seqs"]] = rows[:, col["num_prefill"]] + rows[:, col["num_decode"]]
        rows[:, col["prefill_tokens"]] = rows[:, col["num_prefill"]] * rng.integers(1, 512, n)
        rows[:, col["kv_blocks_used"]] = rng.integers(0, 900, n)
        out.append(rows)
    rows = np.concatenate(out)
    return rows[np.argsort(rows[:, 1], kind="stable")]  # interleaved in time, as the loop logs them


def _fold(rows, chunk, done_until=np.inf):
    """Fold in chunks; ``done_until`` is the window's end (the last completion): the
    completions seen while folding never pass it."""
    s = BatchSummary(lambda cols: (cols["num_seqs"] * 2.0, 5.0))
    for i in range(0, len(rows), chunk):
        s.fold(rows[i : i + chunk])
        s.done_until = min(float(rows[min(i + chunk, len(rows)) - 1, 1]), done_until)
        s.commit()
    s.done_until = done_until
    s.commit()
    return s


def _state(s: BatchSummary, nrep: int, t1: float):
    ints = [getattr(s, k)[:nrep].tolist() for k in ("n", "seqs_sum", "tok_sum", "prefill_sum", "decode_sum", "kv_sum", "kv_max")]
    floats = [getattr(s, k)[:nrep] for k in ("w_sum", "kv_w", "flops", "nbytes")]
    busy = [s.busy_seconds(r, 0.0, t1) for r in range(nrep)]
    sample = sorted(map(tuple, s.sample.tolist()))
    return ints, floats, busy, (s.seqs_hist.keys.tolist(), s.seqs_hist.counts.tolist(),
                                s.tok_hist.keys.tolist(), s.tok_hist.counts.tolist()), sample, s.series.columns(nrep)


def _assert_same_state(a, b):
    assert a[0] == b[0] and a[3] == b[3] and a[4] == b[4]
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=1e-12)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-12)
    assert a[5].keys() == b[5].keys()
    for k in a[5]:
        assert a[5][k].tolist() == b[5][k].tolist(), k


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 400), st.sampled_from([7, 64, 1000]), st.integers(2, 5))
def test_folding_is_independent_of_chunks_and_merges_by_replica(seed, n, chunk, nrep):
    rng = np.random.default_rng(seed)
    rows = _rows(rng, n, range(nrep))
    t1 = float(np.median(rows[:, 2]))  # a window end inside the run: pending batches get clipped
    one = _fold(rows, len(rows), done_until=t1)
    many = _fold(rows, chunk, done_until=t1)
    _assert_same_state(_state(one, nrep, t1), _state(many, nrep, t1))
    # busy time: the spans clipped to [0, t1], as the full log's union gives
    for r in range(nrep):
        m = rows[:, 0] == r
        want = np.sum(np.clip(rows[m, 2], 0, t1) - np.clip(rows[m, 1], 0, t1))
        assert math.isclose(many.busy_seconds(r, 0.0, t1), want, rel_tol=1e-12, abs_tol=1e-12)
    # disjoint replica sets folded apart (as parallel workers would) merge into the same aggregates
    low = rows[:, 0] < nrep // 2
    parts = [_fold(rows[low], chunk, done_until=t1), _fold(rows[~low], chunk, done_until=t1)]
    merged = merge_batch_summaries(parts)
    _assert_same_state(_state(one, nrep, t1), _state(merged, nrep, t1))
    with pytest.raises(VidurError, match="overlap on replica"):
        merge_batch_summaries([one, many])


def test_sample_is_capped_per_replica_and_deterministic():
    rng = np.random.default_rng(1)
    rows = _rows(rng, 5 * SAMPLE_PER_REPLICA, range(3))
    a, b = _fold(rows, 500), _fold(rows, 4096)
    counts = np.bincount(a.sample[:, 0].astype(int))
    assert (counts <= SAMPLE_PER_REPLICA).all() and (counts >= SAMPLE_PER_REPLICA // 4).all()
    assert sorted(map(tuple, a.sample.tolist())) == sorted(map(tuple, b.sample.tolist()))
    cols = a.sample_columns()
    assert np.all(np.diff(cols["replica"]) >= 0)


def test_time_series_bucket_width_doubles_to_stay_under_the_cap():
    from vidur.metrics.batch_summary import TIMESERIES_BASE_S, TIMESERIES_MAX_BUCKETS

    rng = np.random.default_rng(2)
    rows = _rows(rng, 3000, range(2))  # ~ 300+ s of batches
    s = _fold(rows, 256)
    w = s.series.width_s()
    assert w > TIMESERIES_BASE_S and rows[:, 2].max() / w < TIMESERIES_MAX_BUCKETS
    c = s.series.columns(2)
    assert c["batches"].sum() == len(rows)
    busy = np.bincount(c["replica"], weights=c["busy_ns"]) / 1e9
    want = np.bincount(rows[:, 0].astype(int), weights=rows[:, 2] - rows[:, 1])
    np.testing.assert_allclose(busy, want, rtol=0, atol=1e-9 * 3000)
