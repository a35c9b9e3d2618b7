"""Metric definitions on hand-built records with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidur.errors import VidurError
from vidur.metrics._textfmt import Num, Text, format_rows
from vidur.testing.records import records_from_rows, replica_info
from vidur.metrics.report import format_summary_table
from vidur.metrics.summary import (
    SLO_METRICS,
    _union_length,
    request_metrics,
    slo_report,
    summarize,
    weighted_percentile,
)

# arrival, first_scheduled, first_token, completion, output_tokens
# -> ttft, e2e, tpot, normalized e2e, scheduling delay
REQS = [
    dict(arrival=0.0, first_scheduled=0.5, first_token=1.0, completion=3.0, prompt_tokens=10, output_tokens=5),
    dict(arrival=1.0, first_scheduled=1.0, first_token=1.5, completion=2.0, prompt_tokens=20, output_tokens=1),
    dict(arrival=2.0, first_scheduled=2.25, first_token=2.5, completion=4.0, prompt_tokens=30, output_tokens=4),
    dict(arrival=3.0, first_scheduled=3.5, first_token=5.0, completion=6.0, prompt_tokens=40, output_tokens=3,
         preemptions=2, recomputed_tokens=7),
]
TTFT = [1.0, 0.5, 0.5, 2.0]
E2E = [3.0, 1.0, 2.0, 3.0]
TPOT = [0.5, math.nan, 0.5, 0.5]
NORM = [0.6, 1.0, 0.5, 1.0]
SCHED = [0.5, 0.0, 0.25, 0.5]

BATCHES = [
    dict(start=0.0, end=1.0, num_prefill=1, prefill_tokens=10, prefill_work=55.0, kv_blocks_used=10),
    dict(start=1.0, end=2.0, num_decode=2, decode_kv=30, kv_blocks_used=20),
    dict(start=4.0, end=5.0, num_decode=3, decode_kv=40, kv_blocks_used=40),
    dict(start=4.5, end=5.5, num_decode=4, decode_kv=50, kv_blocks_used=60),
]


def base_records(**kw):
    kw.setdefault("replicas", [replica_info(0, kv_blocks=100, peak_flops=10e12, memory_bandwidth=4e12)])
    kw.setdefault("itl", [(0.5, 6), (0.25, 2)])
    return records_from_rows(REQS, BATCHES, **kw)


def test_request_metric_definitions():
    m = request_metrics(base_records())
    np.testing.assert_allclose(m["ttft"], TTFT)
    np.testing.assert_allclose(m["e2e"], E2E)
    np.testing.assert_allclose(m["tpot"], TPOT)  # NaN where output_tokens == 1
    np.testing.assert_allclose(m["normalized_e2e"], NORM)
    np.testing.assert_allclose(m["scheduling_delay"], SCHED)
    assert m["completed"].all()


def test_summary_latency_stats():
    s = summarize(base_records())
    lat = s["latency"]
    assert lat["ttft"]["count"] == 4
    assert lat["ttft"]["mean"] == pytest.approx(1.0)
    assert lat["ttft"]["p50"] == pytest.approx(np.percentile(TTFT, 50))
    assert lat["ttft"]["p99"] == pytest.approx(np.percentile(TTFT, 99))
    assert lat["ttft"]["min"] == 0.5 and lat["ttft"]["max"] == 2.0
    # the single-token request has no TPOT
    assert lat["tpot"]["count"] == 3
    assert lat["tpot"]["mean"] == pytest.approx(0.5)
    assert lat["e2e"]["p90"] == pytest.approx(np.percentile(E2E, 90))
    assert lat["normalized_e2e"]["mean"] == pytest.approx(np.mean(NORM))
    assert lat["scheduling_delay"]["p95"] == pytest.approx(np.percentile(SCHED, 95))
    # ITL from weighted samples: 6 x 0.5 s, 2 x 0.25 s
    assert lat["itl"]["count"] == 8
    assert lat["itl"]["mean"] == pytest.approx((6 * 0.5 + 2 * 0.25) / 8)
    assert lat["itl"]["p50"] == pytest.approx(np.percentile([0.5] * 6 + [0.25] * 2, 50))
    assert set(lat["ttft"]) == {"count", "mean", "min", "max", "p50", "p90", "p95", "p99"}


def test_summary_throughput_tokens_and_preemptions():
    s = summarize(base_records())
    assert s["window"] == {"start": 0.0, "end": 6.0, "duration": 6.0}
    thr = s["throughput"]
    assert thr["requests_per_s"] == pytest.approx(4 / 6)
    assert thr["output_tokens_per_s"] == pytest.approx(13 / 6)
    assert thr["prompt_tokens_per_s"] == pytest.approx(100 / 6)
    assert thr["total_tokens_per_s"] == pytest.approx(113 / 6)
    tok = s["tokens"]
    assert tok["prefill_tokens"] == 10 and tok["decode_tokens"] == 9
    assert tok["prompt_tokens"] == 100 and tok["output_tokens"] == 13
    assert s["preemptions"]["total"] == 2
    assert s["preemptions"]["requests_preempted"] == 1
    assert s["preemptions"]["recomputed_tokens"] == 7
    assert s["requests"] == {"total": 4, "completed": 4, "unfinished": 0}
    assert s["goodput"] is None and s["slo"] is None
    json.dumps(s, allow_nan=False)  # JSON-ready


def test_unfinished_requests_are_counted_not_measured():
    rows = REQS + [dict(arrival=5.0, first_scheduled=5.5, first_token=None, completion=None,
                        prompt_tokens=8, output_tokens=9)]
    s = summarize(records_from_rows(rows, BATCHES))
    assert s["requests"] == {"total": 5, "completed": 4, "unfinished": 1}
    assert s["latency"]["ttft"]["count"] == 4
    assert s["latency"]["scheduling_delay"]["count"] == 4
    assert s["window"]["duration"] == 6.0
    assert s["throughput"]["output_tokens_per_s"] == pytest.approx(13 / 6)


def test_goodput_counts_requests_meeting_all_slos():
    slos = {"ttft": (0.9, 1.0), "tpot": (0.5, 0.5)}
    s = summarize(base_records(), slos)
    gp = s["goodput"]
    # request 3 misses TTFT (2.0 > 1.0); request 1 (one token) meets TPOT by definition
    assert gp["requests_meeting"] == 3
    assert gp["fraction"] == pytest.approx(0.75)
    assert gp["requests_per_s"] == pytest.approx(3 / 6)
    assert gp["per_request_metrics"] == ["ttft", "tpot"]
    # tighter TPOT: nobody with >1 token meets it; the one-token request still does
    gp2 = summarize(base_records(), {"tpot": (0.5, 0.4)})["goodput"]
    assert gp2["requests_meeting"] == 1


def test_goodput_ignores_itl_per_request_but_reports_it():
    s = summarize(base_records(), {"itl": (0.5, 0.1)})
    assert s["goodput"]["requests_meeting"] == 4
    assert s["goodput"]["per_request_metrics"] == []
    assert s["slo"]["itl"]["met"] is False
    assert s["slo"]["itl"]["value"] == pytest.approx(0.5)


def test_slo_report_met_and_unmet():
    rec = base_records()
    slos = {"ttft": (0.9, 1.0), "tpot": (0.99, 0.5), "e2e": (0.5, 3.0), "scheduling_delay": (1.0, 0.5)}
    rep = slo_report(rec, slos)
    assert rep["ttft"]["value"] == pytest.approx(np.quantile(TTFT, 0.9))  # 1.7
    assert rep["ttft"]["met"] is False
    assert rep["tpot"] == {"quantile": 0.99, "value": pytest.approx(0.5), "bound": 0.5, "met": True}
    assert rep["e2e"]["met"] is True
    assert rep["scheduling_delay"]["met"] is True  # max 0.5 <= 0.5
    assert set(rep["ttft"]) == {"quantile", "value", "bound", "met"}


def test_slo_report_from_summary_matches_records():
    rec = base_records()
    summary = summarize(rec, {"ttft": (0.75, 2.0)})
    for slos in ({"ttft": (0.99, 1.0)}, {"e2e": (0.5, 2.5)}, {"itl": (0.9, 0.4)}, {"ttft": (0.75, 2.0)},
                 {"normalized_e2e": (1.0, 1.0)}):
        a = slo_report(summary, slos)
        b = slo_report(rec, slos)
        name = next(iter(slos))
        assert a[name]["met"] == b[name]["met"]
        assert a[name]["value"] == pytest.approx(b[name]["value"])
    with pytest.raises(VidurError, match="pass the run records"):
        slo_report(summary, {"ttft": (0.8, 1.0)})


def test_unknown_slo_name_lists_valid_names():
    with pytest.raises(VidurError) as e:
        slo_report(base_records(), {"latency": (0.99, 1.0)})
    msg = str(e.value)
    assert "latency" in msg
    for name in SLO_METRICS:
        assert name in msg
    with pytest.raises(VidurError, match="unknown SLO"):
        summarize(base_records(), {"ttfb": (0.99, 1.0)})


@pytest.mark.parametrize("spec", [(0.0, 1.0), (1.5, 1.0), (0.9, -1.0), (0.9,), "x", (0.9, "abc")])
def test_bad_slo_specs_are_rejected(spec):
    with pytest.raises(VidurError, match="ttft"):
        slo_report(base_records(), {"ttft": spec})


def test_slo_accepts_mapping_and_list():
    rec = base_records()
    a = slo_report(rec, {"ttft": {"quantile": 0.9, "bound": 2.0}})
    b = slo_report(rec, {"ttft": [0.9, 2.0]})
    assert a == b and a["ttft"]["met"] is True


def test_replica_metrics():
    ff = lambda cols, info: (cols["prefill_tokens"] + cols["num_decode"]) * 1e12  # noqa: E731
    bf = lambda cols, info: 2e12  # noqa: E731  (scalar: every batch)
    s = summarize(base_records(), flops_fn=ff, bytes_fn=bf)
    (r,) = s["replicas"]
    assert r["num_batches"] == 4
    assert r["batch_size"]["mean"] == pytest.approx(2.5)
    assert r["batch_size"]["p50"] == pytest.approx(2.5)
    assert r["batch_size"]["p99"] == pytest.approx(np.percentile([1, 2, 3, 4], 99))
    assert r["tokens_per_batch"]["mean"] == pytest.approx((10 + 2 + 3 + 4) / 4)
    # union of [0,1], [1,2], [4,5], [4.5,5.5] = 3.5 s of a 6 s window
    assert r["busy_seconds"] == pytest.approx(3.5)
    assert r["busy_fraction"] == pytest.approx(3.5 / 6)
    assert r["gpu_busy_seconds"] == pytest.approx(3.5)
    # duration-weighted (all 1 s) mean of 10, 20, 40, 60 of 100 blocks
    assert r["kv_utilization"]["mean"] == pytest.approx(0.325)
    assert r["kv_utilization"]["max"] == pytest.approx(0.6)
    assert r["mfu"] == pytest.approx(19e12 / (3.5 * 10e12))
    assert r["mfu_window"] == pytest.approx(19e12 / (6 * 10e12))
    assert r["mbu"] == pytest.approx(8e12 / (3.5 * 4e12))
    assert r["preemptions"] == 2 and r["requests"] == 4
    assert r["prefill_tokens"] == 10 and r["decode_tokens"] == 9
    assert summarize(base_records())["replicas"][0]["mfu"] is None  # no flops_fn


def test_kv_utilization_is_time_weighted():
    b = [dict(start=0.0, end=3.0, num_decode=1, kv_blocks_used=10),
         dict(start=3.0, end=4.0, num_decode=1, kv_blocks_used=50)]
    rec = records_from_rows(REQS, b, replicas=[replica_info(0, kv_blocks=100)])
    kv = summarize(rec)["replicas"][0]["kv_utilization"]
    assert kv["mean"] == pytest.approx((3 * 0.1 + 1 * 0.5) / 4)


def test_pipeline_parallel_busy_time_uses_stage_spans():
    info = replica_info(0, tp=2, pp=2, peak_flops=1e12)
    reqs = [dict(arrival=0.0, first_token=2.0, completion=5.0, prompt_tokens=4, output_tokens=2)]
    batches = [dict(start=0.0, end=2.0, num_prefill=1, prefill_tokens=4),
               dict(start=0.5, end=2.5, num_decode=1)]
    spans = [dict(replica=0, stage=0, start=0.0, end=1.0, batch=0),
             dict(replica=0, stage=1, start=1.0, end=2.0, batch=0),
             dict(replica=0, stage=0, start=1.0, end=1.5, batch=1),
             dict(replica=0, stage=1, start=2.0, end=2.5, batch=1)]
    ff = lambda c, i: 1e12  # noqa: E731
    r = summarize(records_from_rows(reqs, batches, replicas=[info], stage_spans=spans), flops_fn=ff)["replicas"][0]
    assert r["busy_source"] == "stage_spans"
    assert r["busy_seconds"] == pytest.approx(2.5)
    assert r["busy_fraction"] == pytest.approx(0.5)
    assert r["stage_busy_fraction"] == pytest.approx([0.3, 0.3])
    assert r["gpu_busy_seconds"] == pytest.approx(2 * (1.5 + 1.5))
    assert r["mfu"] == pytest.approx(2e12 / (6 * 1e12))
    assert r["mfu_window"] == pytest.approx(2e12 / (5 * 4 * 1e12))
    # without stage spans: union of batch spans on all 4 GPUs
    r2 = summarize(records_from_rows(reqs, batches, replicas=[info]))["replicas"][0]
    assert r2["busy_source"] == "batches"
    assert r2["busy_seconds"] == pytest.approx(2.5)
    assert r2["gpu_busy_seconds"] == pytest.approx(10.0)


def test_several_replicas_unsorted_rows():
    b = [dict(replica=1, start=0.0, end=1.0, num_decode=2),
         dict(replica=0, start=0.0, end=2.0, num_decode=1),
         dict(replica=1, start=2.0, end=3.0, num_decode=4)]
    reqs = [dict(replica=i % 2, arrival=0.0, first_token=1.0, completion=4.0, prompt_tokens=1, output_tokens=2)
            for i in range(3)]
    s = summarize(records_from_rows(reqs, b))
    r0, r1 = s["replicas"]
    assert (r0["replica"], r0["num_batches"], r0["busy_seconds"], r0["requests"]) == (0, 1, 2.0, 2)
    assert (r1["replica"], r1["num_batches"], r1["busy_seconds"], r1["requests"]) == (1, 2, 2.0, 1)
    assert r1["batch_size"]["mean"] == 3.0


def test_replica_without_batches_and_empty_run():
    rec = records_from_rows(REQS, BATCHES, replicas=[replica_info(0), replica_info(1)])
    r1 = summarize(rec)["replicas"][1]
    assert r1["num_batches"] == 0 and r1["busy_fraction"] == 0.0
    assert r1["batch_size"]["mean"] is None
    empty = summarize(records_from_rows([], []))
    assert empty["requests"]["total"] == 0
    assert empty["throughput"]["requests_per_s"] is None
    assert empty["latency"]["ttft"]["p50"] is None
    json.dumps(empty, allow_nan=False)
    format_summary_table(empty)


# ------------------------------------------------------------ weighted percentile


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.integers(0, 20)), min_size=1, max_size=30
    ),
    st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
def test_weighted_percentile_matches_expanded_numpy(samples, qs):
    v = np.array([s[0] for s in samples])
    c = np.array([s[1] for s in samples])
    if c.sum() == 0:
        assert np.isnan(weighted_percentile(v, c, 50.0))
        return
    expected = np.percentile(np.repeat(v, c), qs)
    got = weighted_percentile(v, c, qs)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert weighted_percentile(v, c, qs[0]) == pytest.approx(expected[0], rel=1e-9, abs=1e-9)


def test_weighted_percentile_edges():
    assert weighted_percentile([3.0], [5], 0) == 3.0
    assert weighted_percentile([1.0, 2.0], [1, 1], 50) == 1.5
    assert weighted_percentile([2.0, 1.0], [0, 4], [0, 100]).tolist() == [1.0, 1.0]
    assert np.isnan(weighted_percentile([], [], 50))
    with pytest.raises(ValueError):
        weighted_percentile([1.0], [1, 2], 50)
    with pytest.raises(ValueError):
        weighted_percentile([1.0], [1], 101)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10)), max_size=25))
def test_union_length_matches_brute_force(intervals):
    s = np.array([a for a, _ in intervals], dtype=float)
    e = np.array([a + d for a, d in intervals], dtype=float)
    cells = set()
    for a, d in intervals:
        cells.update(range(a, a + d))
    assert _union_length(s, e) == pytest.approx(len(cells))


# ------------------------------------------------------------ text formatting


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(-(10**15), 10**15), min_size=1, max_size=20),
    st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(math.nan)), min_size=1, max_size=20),
)
def test_vectorised_formatting_round_trips(ints, floats):
    n = min(len(ints), len(floats))
    iv = np.array(ints[:n], dtype=np.int64)
    fv = np.array(floats[:n])
    text = b"".join(format_rows([Num(iv), b",", Num(fv), b",", Text(["x"] * n), b"\n"])).decode()
    lines = text.splitlines()
    assert len(lines) == n
    for line, i, f in zip(lines, iv, fv):
        a, b, c = line.split(",")
        assert int(a) == i
        assert c == "x"
        if math.isnan(f):
            assert b == ""
        else:
            assert "e" not in b and not b.endswith(".")
            assert float(b) == pytest.approx(f, abs=1e-8 + 1e-15 * abs(f))


def test_formatting_examples():
    out = b"".join(format_rows([Num(np.array([0.0, 1.5, -2.25, 1e-9, 12.0])), b"\n"])).decode()
    assert out.splitlines() == ["0", "1.5", "-2.25", "0.000000001", "12"]
    out = b"".join(format_rows([Num(np.array([1.23456]), decimals=2), b"|", Num(np.array([True])), b"\n"]))
    assert out == b"1.23|1\n"


# ------------------------------------------------------------ report


def test_format_summary_table():
    s = summarize(base_records(), {"ttft": (0.9, 1.0), "tpot": (0.5, 0.5)},
                  flops_fn=lambda c, i: 1e12)
    text = format_summary_table(s)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("latency (ms)"))
    for col in ("p50", "p90", "p99", "mean"):
        assert col in header
    ttft = next(line for line in lines if line.startswith("TTFT"))
    assert "750" in ttft  # p50 of TTFT = 0.75 s
    assert "1,000" in ttft  # mean = 1 s
    # rows of the latency table are aligned to the header
    table = [line for line in lines if line.startswith(("latency", "TTFT", "TPOT", "E2E "))]
    assert len({len(line) for line in table}) == 1
    assert any(line.startswith("throughput") for line in lines)
    assert any(line.startswith("goodput") and "75.0%" in line for line in lines)
    assert any("MISSED" in line for line in lines)  # ttft p90 1.7 s > 1 s
    assert any(line.startswith("0 ") and "h100" in line for line in lines)


def test_model_cost_fns_give_replica_totals():
    pytest.importorskip("vidur.model.cost")
    from vidur.metrics.summary import model_cost_fns
    from vidur.model.catalog import load_model

    model = load_model("meta-llama/Llama-2-7b-hf")
    ff, bf = model_cost_fns(model)
    cols = dict(prefill_tokens=np.array([0, 512]), num_decode=np.array([64, 0]),
                prefill_work=np.array([0.0, 512 * 513 / 2]), decode_kv=np.array([64_000, 0]),
                num_seqs=np.array([64, 1]))
    one = ff(cols, replica_info(0))
    # ~2 FLOPs per parameter per token
    assert one / (2 * model.num_params()) == pytest.approx([64, 512], rel=0.05)
    # totals over the replica do not depend on how it is sharded
    for tp, pp in ((2, 1), (1, 2), (2, 2)):
        np.testing.assert_allclose(ff(cols, replica_info(0, tp=tp, pp=pp)), one, rtol=0.01)
    assert bf(cols, replica_info(0))[0] > 2 * model.num_params()  # weights + KV read
    rec = records_from_rows(REQS, [dict(BATCHES[1], num_seqs=2, prefill_work=0.0)])
    r = summarize(rec, flops_fn=ff, bytes_fn=bf)["replicas"][0]
    assert 0 < r["mfu"] < 1 and 0 < r["mbu"] < 1


@pytest.mark.parametrize("name", ["meta-llama/Llama-2-7b-hf", "mistralai/Mixtral-8x7B-v0.1", "openai/gpt-oss-20b"])
def test_model_cost_fns_price_a_long_log_in_pieces_with_the_same_bits(name, monkeypatch):
    import vidur.metrics.summary as S
    from vidur.model.catalog import load_model

    rng = np.random.default_rng(3)
    n = 1001
    cols = dict(prefill_tokens=rng.integers(0, 600, n), num_decode=rng.integers(0, 128, n),
                prefill_work=rng.random(n) * 1e5, decode_kv=rng.integers(0, 200_000, n),
                num_seqs=rng.integers(1, 129, n), prefill_kv=rng.integers(0, 700, n))
    ff, bf = S.model_cost_fns(load_model(name))
    whole = ff(cols, replica_info(0, tp=2)), bf(cols, replica_info(0, tp=2))
    monkeypatch.setattr(S, "COST_CHUNK", 64)  # 16 pieces, the last a short one
    ff, bf = S.model_cost_fns(load_model(name))
    pieces = ff(cols, replica_info(0, tp=2)), bf(cols, replica_info(0, tp=2))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(whole, pieces))
