"""Scenario file -> simulation -> summary -> run directory."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from vidur.engine.simulation import Simulation, SimulationResult
from vidur.plugins import PluginHost, get_host
from vidur.scenario import Scenario


def default_out_dir(scenario_path: str | Path) -> Path:
    """``runs/<scenario stem>-<UTC timestamp>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(scenario_path).stem}-{stamp}"


def slo_dict(scenario: Scenario) -> dict[str, tuple[float, float]]:
    """The scenario's SLOs as ``{metric: (quantile, max seconds)}``."""
    return {k: (v.quantile, v.max_s) for k, v in scenario.metrics.slos.items()}


def operator_shares(sim: Simulation, batches: dict, sample: int = 2000) -> dict[str, float]:
    """Share of device + CPU time per operator, from the estimator's breakdown
    of an evenly spaced sample of at most ``sample`` batches."""
    from vidur.estimate.base import BatchShape

    n = len(batches["start"])
    if n == 0:
        return {}
    est, model = sim.estimator, sim.model
    rows = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))
    totals: dict[str, float] = {}
    for i in rows.tolist():
        shape = BatchShape(
            num_prefill=int(batches["num_prefill"][i]),
            prefill_tokens=int(batches["prefill_tokens"][i]),
            prefill_work=float(batches["prefill_work"][i]),
            prefill_kv=int(batches["prefill_kv"][i]),
            num_decode=int(batches["num_decode"][i]),
            decode_kv=int(batches["decode_kv"][i]),
        )
        for op, t in est.breakdown(shape).items():
            totals[op] = totals.get(op, 0.0) + t * model.num_layers
        totals["lm_head"] = totals.get("lm_head", 0.0) + est.head_time(shape.num_seqs)
        totals["cpu_overhead"] = totals.get("cpu_overhead", 0.0) + est.cpu_overhead(shape.num_seqs)
    whole = sum(totals.values()) or 1.0
    return {op: round(t / whole, 4) for op, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def summarize_run(sim: Simulation, result: SimulationResult) -> dict:
    """:func:`vidur.metrics.summary.summarize` of a finished run with its SLOs and the
    model's cost functions, so MFU/MBU come out the same whether the batch log was
    kept in full or summarised (``vidur run`` and ``vidur sweep`` both use it)."""
    from vidur.metrics.summary import model_cost_fns, summarize

    rec = result.records
    # summary mode: FLOPs and bytes were priced during the run with the same cost functions
    flops_fn, bytes_fn = model_cost_fns(sim.model) if rec.batch_summary is None else (None, None)
    return summarize(rec, slo_dict(sim.scenario), flops_fn=flops_fn, bytes_fn=bytes_fn)


def summarize_result(sim: Simulation, result: SimulationResult) -> dict:
    """The summary dict of a finished run (metrics plus run facts)."""
    from vidur.metrics.batch_summary import SAMPLE_PER_REPLICA

    model, tp = sim.model, sim.scenario.cluster.tensor_parallel
    rec = result.records
    folded = rec.batch_summary
    summary = summarize_run(sim, result)
    if folded is None:
        summary["operator_time_share"] = operator_shares(sim, rec.batches)
        how = "an evenly spaced sample of at most 2000 batches"
    else:
        summary["operator_time_share"] = operator_shares(sim, folded.sample_columns())
        how = (
            "an evenly spaced sample of at most 2000 rows of the summarised log's sample "
            f"(at most {SAMPLE_PER_REPLICA} batches per replica, chosen by a hash of their start): a sample of a sample"
        )
    summary["definitions"]["operator_time_share"] = (
        f"share of estimated device + CPU time per operator over {how}"
    )
    summary["run"] = {
        "model": model.name,
        "device": sim.device.name,
        "replicas": sim.scenario.cluster.num_replicas,
        "tensor_parallel": tp,
        "pipeline_parallel": sim.scenario.cluster.pipeline_parallel,
        "expert_parallel": model.expert_parallel,
        "weight_bytes": model.weight_bytes,
        "expert_weight_bytes": model.expert_bytes if model.is_moe else None,
        "kv_cache_bytes": model.kv_bytes,
        "replica_scheduler": sim.scenario.replica_scheduler.name,
        "global_scheduler": sim.scenario.global_scheduler.name,
        "estimator": result.estimator,
        "estimator_source": sim.provenance.source,
        "kv_blocks_per_replica": sim.memory.num_blocks,
        "block_size": sim.memory.block_size,
        "num_requests": len(result.requests),
        "clipped_requests": sim.clipped,
        "batch_log": {"mode": sim.batch_log, "why": sim.batch_log_reason},
    }
    summary["provenance"] = sim.provenance.to_dict()
    return summary


def run_scenario(
    scenario: Scenario,
    out_dir: str | Path | None,
    *,
    host: PluginHost | None = None,
    step_mode: bool = False,
    overwrite: bool = False,
    executor: str = "process",
) -> tuple[SimulationResult, dict]:
    """Simulate ``scenario``; write the run directory when ``out_dir`` is given.

    The files hold no wall-clock figures, so the same scenario and seed give
    byte-identical run directories; the returned summary has ``wall_seconds``. ``executor``:
    where parallel replica groups run (``process`` or ``ray``, :meth:`Simulation.run`).
    """
    host = host or get_host()
    sim = Simulation(scenario, host)
    if sim.clipped:
        import warnings

        lim = scenario.workload.lengths.config.max_tokens
        warnings.warn(
            f"workload.lengths.max_tokens ({lim}) clipped {sim.clipped} of {len(sim.table)} requests "
            f"({100 * sim.clipped / len(sim.table):.1f} %) whose prompt + output was longer",
            stacklevel=2,
        )
    result = sim.run(step_mode=step_mode, executor=executor)
    if out_dir is None:
        return result, summarize_result(sim, result)
    from vidur.metrics.outputs import RunDirWriter

    m = scenario.metrics
    # the tables are written (another thread, GIL released) while the summary is computed
    writer = RunDirWriter(out_dir, result.records, tables=m.tables, overwrite=overwrite, table_format=m.table_format)
    try:
        summary = summarize_result(sim, result)
    except BaseException:
        writer.abort()
        raise
    writer.finish(
        scenario.to_yaml(),
        {k: v for k, v in summary.items() if k != "wall_seconds"},
        chrome_trace=m.chrome_trace,
        plots=m.plots,
    )
    return result, summary
