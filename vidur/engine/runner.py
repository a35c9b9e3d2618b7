"""Scenario file -> simulation -> summary -> run directory."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

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


def summarize_result(sim: Simulation, result: SimulationResult) -> dict:
    """The summary dict of a finished run (metrics plus run facts)."""
    from vidur.metrics.summary import model_cost_fns, summarize

    model, tp = sim.model, sim.scenario.cluster.tensor_parallel
    flops_fn, bytes_fn = model_cost_fns(model)
    summary = summarize(result.records, slo_dict(sim.scenario), flops_fn=flops_fn, bytes_fn=bytes_fn)
    summary["run"] = {
        "model": model.name,
        "device": sim.device.name,
        "replicas": sim.scenario.cluster.num_replicas,
        "tensor_parallel": tp,
        "pipeline_parallel": sim.scenario.cluster.pipeline_parallel,
        "replica_scheduler": sim.scenario.replica_scheduler.name,
        "global_scheduler": sim.scenario.global_scheduler.name,
        "estimator": result.estimator,
        "kv_blocks_per_replica": sim.memory.num_blocks,
        "block_size": sim.memory.block_size,
        "num_requests": len(result.requests),
    }
    return summary


def run_scenario(
    scenario: Scenario,
    out_dir: str | Path | None,
    *,
    host: PluginHost | None = None,
    step_mode: bool = False,
    overwrite: bool = False,
) -> tuple[SimulationResult, dict]:
    """Simulate ``scenario``; write the run directory when ``out_dir`` is given.

    The files hold no wall-clock figures, so the same scenario and seed give
    byte-identical run directories; the returned summary has ``wall_seconds``.
    """
    host = host or get_host()
    sim = Simulation(scenario, host)
    result = sim.run(step_mode=step_mode)
    summary = summarize_result(sim, result)
    if out_dir is not None:
        from vidur.metrics.outputs import write_run_dir

        m = scenario.metrics
        write_run_dir(
            out_dir,
            scenario.to_yaml(),
            {k: v for k, v in summary.items() if k != "wall_seconds"},
            result.records,
            chrome_trace=m.chrome_trace,
            plots=m.plots,
            tables=m.tables,
            overwrite=overwrite,
        )
    return result, summary
