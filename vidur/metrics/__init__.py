"""Metrics: raw run records -> summaries, tables, traces, plots, terminal report."""

from vidur.metrics.records import BATCH_COLUMNS, REQUEST_COLUMNS, ReplicaInfo, RunRecords
from vidur.metrics.report import format_summary_table
from vidur.metrics.summary import (
    SLO_METRICS,
    model_cost_fns,
    request_metrics,
    slo_report,
    summarize,
    weighted_percentile,
)
from vidur.metrics.outputs import write_run_dir
from vidur.metrics.tablefile import read_run_table

__all__ = [
    "BATCH_COLUMNS",
    "REQUEST_COLUMNS",
    "ReplicaInfo",
    "RunRecords",
    "SLO_METRICS",
    "format_summary_table",
    "model_cost_fns",
    "read_run_table",
    "request_metrics",
    "slo_report",
    "summarize",
    "weighted_percentile",
    "write_run_dir",
]
