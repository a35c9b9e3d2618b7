"""The run directory: files, formats, Chrome trace, plots, atomic writes."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from vidur.errors import VidurError
from vidur.metrics import outputs
from vidur.testing.records import records_from_rows, replica_info
from vidur.metrics.outputs import write_chrome_trace, write_run_dir
from vidur.metrics.records import BATCH_COLUMNS, REQUEST_COLUMNS
from vidur.metrics.summary import request_metrics, summarize

SCENARIO = "model: meta-llama/Meta-Llama-3-8B\nseed: 1\n"


def make_records(n_req=40, n_batch=120, n_rep=2, pp=1, spans=False, seed=0):
    rng = np.random.default_rng(seed)
    reqs = []
    for i in range(n_req):
        a = float(i) * 0.1
        out = int(rng.integers(1, 6))
        ft = a + 0.05 + float(rng.random())
        done = None if i == n_req - 1 else ft + 0.01 * out
        reqs.append(dict(replica=i % n_rep, arrival=a, first_scheduled=a + 0.01, first_token=ft,
                         completion=done, prompt_tokens=int(rng.integers(1, 100)), output_tokens=out))
    batches = []
    for j in range(n_batch):
        s = j * 0.05
        batches.append(dict(replica=j % n_rep, start=s, end=s + 0.04, num_prefill=j % 2,
                            prefill_tokens=(j % 2) * 17, prefill_work=(j % 2) * 153.5, num_decode=j % 5,
                            decode_kv=11 * j, kv_blocks_used=j % 50))
    stage_spans = None
    if spans:
        stage_spans = []
        for j, b in enumerate(batches):
            d = (b["end"] - b["start"]) / pp
            for k in range(pp):
                stage_spans.append(dict(replica=b["replica"], stage=k, start=b["start"] + k * d,
                                        end=b["start"] + (k + 1) * d, batch=j))
    reps = [replica_info(r, tp=1, pp=pp, kv_blocks=100) for r in range(n_rep)]
    return records_from_rows(reqs, batches, replicas=reps, itl=[(0.01, 30), (0.02, 5)],
                             stage_spans=stage_spans)


def _write(tmp_path, rec=None, **kw):
    rec = rec or make_records()
    kw.setdefault("chrome_trace", True)
    kw.setdefault("plots", False)
    kw.setdefault("table_format", "csv")
    out = tmp_path / "run"
    write_run_dir(out, SCENARIO, summarize(rec, {"ttft": (0.9, 1.0)}), rec, **kw)
    return out, rec


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_dir_files_exist_and_parse(tmp_path):
    out, rec = _write(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [
        "batches.csv", "requests.csv", "scenario.yaml", "summary.json", "trace.json"]
    assert (out / "scenario.yaml").read_text() == SCENARIO
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["total"] == 40 and summary["requests"]["unfinished"] == 1
    assert summary["slo"]["ttft"]["bound"] == 1.0

    rows = _read_csv(out / "requests.csv")
    assert len(rows) == 40
    assert list(rows[0])[: len(REQUEST_COLUMNS)] == list(REQUEST_COLUMNS)
    m = request_metrics(rec)
    for i, row in enumerate(rows):
        assert int(row["request_id"]) == i
        for key in ("ttft", "tpot", "e2e", "normalized_e2e", "scheduling_delay"):
            want = m[key][i]
            if math.isnan(want):
                assert row[key] == ""
            else:
                assert float(row[key]) == pytest.approx(want, abs=1e-9)
    assert rows[-1]["completion"] == "" and rows[-1]["e2e"] == ""  # unfinished

    brows = _read_csv(out / "batches.csv")
    assert len(brows) == 120
    assert list(brows[0]) == ["batch", *BATCH_COLUMNS, "num_tokens", "duration"]
    assert float(brows[7]["start"]) == pytest.approx(0.35)
    assert float(brows[7]["prefill_work"]) == 153.5
    assert int(brows[7]["num_tokens"]) == 17 + 2
    assert float(brows[7]["duration"]) == pytest.approx(0.04)


def test_chrome_trace_is_valid(tmp_path):
    out, rec = _write(tmp_path)
    trace = json.loads((out / "trace.json").read_text())
    events = trace["traceEvents"]
    x = [e for e in events if e["ph"] == "X"]
    c = [e for e in events if e["ph"] == "C"]
    meta = [e for e in events if e["ph"] == "M"]
    assert len(x) == 120 and len(c) == 120
    assert {e["args"]["name"] for e in meta if e["name"] == "process_name"} == {
        "replica 0 (h100, TP1 PP1)", "replica 1 (h100, TP1 PP1)"}
    e7 = next(e for e in x if e["args"]["batch"] == 7)
    assert e7["pid"] == 2 and e7["tid"] == 1  # replica 1, stage 0 (ids are shifted by one)
    assert e7["ts"] == pytest.approx(0.35e6) and e7["dur"] == pytest.approx(0.04e6)
    assert e7["args"]["num_seqs"] == 3 and e7["args"]["prefill_tokens"] == 17
    assert e7["name"] == "mixed"
    assert trace["otherData"]["truncated"] is False


def test_chrome_trace_cap(tmp_path):
    rec = make_records()
    info = write_chrome_trace(tmp_path / "t.json", rec, max_events=50)
    assert info == {"events": 50, "total": 120, "truncated": True}
    trace = json.loads((tmp_path / "t.json").read_text())
    x = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(x) == 50 and not [e for e in trace["traceEvents"] if e["ph"] == "C"]
    assert max(e["args"]["batch"] for e in x) == 49  # the earliest ones
    assert trace["otherData"]["truncated"] is True and "50 of 120" in trace["otherData"]["note"]


def test_chrome_trace_pipeline_stages(tmp_path):
    rec = make_records(pp=2, spans=True)
    write_chrome_trace(tmp_path / "t.json", rec)
    trace = json.loads((tmp_path / "t.json").read_text())
    x = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(x) == 240
    assert {e["tid"] for e in x} == {1, 2}
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[(2, 2)] == "stage 1"
    # no spans: batches alternate over pp lanes per replica
    rec2 = make_records(pp=2)
    write_chrome_trace(tmp_path / "t2.json", rec2)
    x2 = [e for e in json.loads((tmp_path / "t2.json").read_text())["traceEvents"] if e["ph"] == "X"]
    lanes = [e["tid"] for e in sorted(x2, key=lambda e: e["args"]["batch"]) if e["pid"] == 1]
    assert lanes[:4] == [1, 2, 1, 2]


def test_empty_run_writes_valid_files(tmp_path):
    rec = records_from_rows([], [])
    out = tmp_path / "run"
    write_run_dir(out, SCENARIO, summarize(rec), rec, chrome_trace=True, plots=False, table_format="csv")
    assert _read_csv(out / "requests.csv") == []
    trace = json.loads((out / "trace.json").read_text())
    assert [e for e in trace["traceEvents"] if e["ph"] == "X"] == []


def test_tables_optional(tmp_path):
    out, _ = _write(tmp_path, tables=False, chrome_trace=False)
    assert sorted(p.name for p in out.iterdir()) == ["scenario.yaml", "summary.json"]


def test_keeps_other_files_and_refuses_an_earlier_run_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rec = make_records()
    s = summarize(rec)
    write_run_dir(out, SCENARIO, s, rec, chrome_trace=True, plots=False)  # other files are fine
    assert (out / "keep.txt").read_text() == "x" and (out / "summary.json").exists()
    before = (out / "summary.json").read_bytes()
    with pytest.raises(VidurError, match="already holds a run"):
        write_run_dir(out, SCENARIO, s, rec, chrome_trace=False, plots=False)
    assert (out / "summary.json").read_bytes() == before and (out / "trace.json").exists()
    write_run_dir(out, SCENARIO, s, rec, chrome_trace=False, plots=False, overwrite=True)
    assert (out / "keep.txt").exists() and (out / "summary.json").exists()
    assert not (out / "trace.json").exists()  # the earlier run is replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temp dirs left
    empty = tmp_path / "empty"
    empty.mkdir()
    write_run_dir(empty, SCENARIO, s, rec, chrome_trace=False, plots=False)
    assert (empty / "summary.json").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(VidurError, match="not a directory"):
        write_run_dir(tmp_path / "afile", SCENARIO, s, rec, chrome_trace=False, plots=False)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs, "write_batches_table", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _write(tmp_path)
    assert list(tmp_path.iterdir()) == []
    # an existing run is left intact when overwriting fails
    old = tmp_path / "run"
    old.mkdir()
    (old / "summary.json").write_text("{}")
    with pytest.raises(RuntimeError):
        _write(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (old / "summary.json").read_text() == "{}"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_background_writer_writes_what_write_run_dir_writes(tmp_path, fmt):
    rec = make_records(spans=True)
    s = summarize(rec)
    write_run_dir(tmp_path / "a", SCENARIO, s, rec, chrome_trace=True, plots=False, table_format=fmt)
    w = outputs.RunDirWriter(tmp_path / "b", rec, table_format=fmt)  # tables in a thread
    w.finish(SCENARIO, s, chrome_trace=True, plots=False)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp dirs left


def test_background_writer_failure_or_abort_leaves_nothing(tmp_path, monkeypatch):
    rec = make_records()
    w = outputs.RunDirWriter(tmp_path / "run", rec)
    w.abort()  # e.g. the summary failed: the tables' thread is waited for, its directory removed
    assert list(tmp_path.iterdir()) == []

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "write_batches_table", boom)
    w = outputs.RunDirWriter(tmp_path / "run", rec)
    with pytest.raises(OSError, match="disk full"):  # raised where the caller finishes
        w.finish(SCENARIO, summarize(rec), chrome_trace=False, plots=False)
    assert list(tmp_path.iterdir()) == []


def test_plots_created(tmp_path):
    pytest.importorskip("matplotlib")
    out, _ = _write(tmp_path, plots=True, chrome_trace=False)
    names = sorted(p.name for p in (out / "plots").iterdir())
    assert names == sorted(outputs.PLOT_FILES)
    for n in names:
        assert (out / "plots" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_skipped_with_warning_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "plots_available", lambda: False)
    with pytest.warns(UserWarning, match="matplotlib"):
        out, _ = _write(tmp_path, plots=True, chrome_trace=False)
    assert not (out / "plots").exists()


def test_summary_json_is_strict(tmp_path):
    outputs.write_summary_json(tmp_path / "s.json", {"a": float("nan"), "b": np.int64(3), "c": np.float32(0.5),
                                                     "d": [np.bool_(True), float("inf")]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": 3, "c": 0.5, "d": [True, None]}
