"""The metric table: one entry defines a request metric for every output."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from vidur.metrics import table
from vidur.metrics.outputs import write_requests_csv
from vidur.metrics.report import format_summary_table
from vidur.metrics.summary import slo_report, summarize
from vidur.metrics.table import METRICS, Metric
from vidur.search.probe import evaluate, metric_column
from vidur.search.spec import SLOTarget

PREFILL = Metric(
    name="prefill_span", label="prefill span", title="First scheduled to first token",
    definition="first_token - first_scheduled", end="first_token", start="first_scheduled",
    plot=True, probe=(0.99,),
)
RECOMPUTE = Metric(
    name="recompute_share", label="recomputed / prompt", title="Recomputed tokens per prompt token",
    definition="recomputed_tokens / prompt_tokens", unit="fraction", end="recomputed_tokens", per="prompt_tokens",
    slo=False,
)


@pytest.fixture
def run(tiny_cluster):
    return tiny_cluster("vllm", num_requests=24, qps=200.0, num_replicas=1)


def test_one_entry_adds_a_metric_to_every_output(run, monkeypatch, tmp_path):
    monkeypatch.setattr(table, "METRICS", METRICS + (PREFILL, RECOMPUTE))
    rec = run.records
    r = rec.requests
    want = r["first_token"] - r["first_scheduled"]

    s = summarize(rec, {"prefill_span": (0.9, 10.0)})
    assert s["latency"]["prefill_span"]["max"] == pytest.approx(want.max())
    assert s["definitions"]["prefill_span"] == "first_token - first_scheduled"
    assert "prefill_span" in s["goodput"]["per_request_metrics"] and s["slo"]["prefill_span"]["met"]
    assert s["request_metrics"]["recompute_share"]["count"] == len(want)
    assert slo_report(rec, {"prefill_span": (0.5, 0.0)})["prefill_span"]["met"] is False

    write_requests_csv(tmp_path / "r.csv", rec)
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [float(x["prefill_span"]) for x in rows] == pytest.approx(want.tolist())
    assert "recompute_share" in rows[0]

    text = format_summary_table(s)
    assert "prefill span" in text and "recomputed / prompt (fraction)" in text

    probe = evaluate(rec, float("inf"), (SLOTarget("prefill_span", 0.99, 10.0),))
    col = metric_column("prefill_span", 0.99)
    assert probe["slos"][col]["met"]
    assert probe["stats"][col] == pytest.approx(np.quantile(want, 0.99))


def test_a_metric_undefined_for_a_request_counts_as_met_for_goodput(run):
    rec = run.records
    s = summarize(rec, {"tpot": (0.99, 0.0)})
    single = int((rec.requests["output_tokens"] == 1).sum())
    assert s["goodput"]["requests_meeting"] == single  # only single-token requests have no TPOT


def test_every_table_entry_is_complete():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for m in METRICS:
        assert m.label and m.title and m.definition
        if m.per_request:
            assert set(m.columns) <= {"arrival", "first_scheduled", "first_token", "completion", "prompt_tokens",
                                      "output_tokens", "preemptions", "recomputed_tokens", "cached_tokens"}
        assert m.slo is False or m.unit == "s" or m.name not in table.slo_metrics()
