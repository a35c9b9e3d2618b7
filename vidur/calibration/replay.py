"""Replay a measured vLLM run in the simulator under the run's own engine settings.

:func:`scenario_for` maps a :class:`~vidur.validate.real_runs.RealRun`'s recorded
vLLM arguments one to one onto the ``vllm_v1`` policy and the ``paged`` memory
planner (``max_num_seqs``, ``max_num_batched_tokens``, ``long_prefill_token_threshold``,
``async_scheduling``, CUDA-graph capture sizes, ``block_size``,
``gpu_memory_utilization``, ``enable_prefix_caching``; the KV block count vLLM logged,
as ``num_gpu_blocks_override``, when the run saved it). :func:`replay` runs it (the
same requests, arrivals and lengths) and returns TTFT/TPOT/E2E statistics with
vLLM's definitions.
"""

from __future__ import annotations

import numpy as np

from vidur.errors import VidurError
from vidur.validate.real_runs import RealRun

METRICS = ("ttft", "tpot", "e2e")
STATS = ("mean", "p50", "p90", "p99")

#: vLLM's defaults for the arguments a run may leave unrecorded (vLLM 0.19,
#: ``vllm/config/scheduler.py`` and ``cache.py``)
VLLM_DEFAULTS = {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "block_size": 16, "gpu_memory_utilization": 0.9}


def run_stats(ttft: np.ndarray, tpot: np.ndarray, e2e: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean, p50, p90 and p99 (linear, as numpy) of each metric; NaN TPOTs are left out."""
    out = {}
    for name, v in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        v = np.asarray(v, dtype=np.float64)
        v = v[np.isfinite(v)]
        p50, p90, p99 = np.percentile(v, (50, 90, 99))
        out[name] = {"mean": float(v.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}
    return out


def device_of(run: RealRun) -> str:
    """The catalog device of a run: ``meta["device"]`` when given, else from the CUDA device
    name it recorded, else the folder name's prefix (``rtxpro6000_qwen3-32b`` -> ``rtxpro6000``)."""
    from vidur.hardware.catalog import sku_of_gpu_name

    if run.meta.get("device"):
        return str(run.meta["device"])
    if run.device_name:
        sku = sku_of_gpu_name(run.device_name)
        if sku:
            return sku
    prefix = run.name.split("_", 1)[0].lower()
    from vidur.hardware.catalog import DEVICES

    if prefix in {d.name for d in DEVICES}:
        return prefix
    raise VidurError(f"run {run.name}: cannot tell its GPU (no hardware.device_name in meta.json, "
                     f"and the folder name does not start with a known device)")


def engine_settings(run: RealRun) -> dict:
    """The run's vLLM arguments that the simulator models, as recorded (else vLLM's defaults)."""
    kw = run.engine_kwargs
    sc = run.scheduler_config()
    kv = run.kv_cache()

    def pick(key, default=None):
        for src in (kw, sc, kv):
            if src.get(key) is not None:
                return src[key]
        return VLLM_DEFAULTS.get(key, default)

    out = {
        "tensor_parallel_size": int(kw.get("tensor_parallel_size") or 1),
        "max_num_seqs": int(pick("max_num_seqs")),
        "max_num_batched_tokens": int(pick("max_num_batched_tokens")),
        "block_size": int(pick("block_size")),
        "gpu_memory_utilization": float(pick("gpu_memory_utilization")),
        "enable_prefix_caching": bool(pick("enable_prefix_caching", True)),
        "num_gpu_blocks": kv.get("num_gpu_blocks"),
        "long_prefill_token_threshold": int(pick("long_prefill_token_threshold", 0)),
        "async_scheduling": bool(pick("async_scheduling", True)),
    }
    sizes = run.cudagraph_capture_sizes()
    if sizes:
        out["cudagraph_capture_sizes"] = sizes
    return out


def scenario_dict(run: RealRun, calibration=None, *, policy: str = "vllm_v1") -> dict:
    """The scenario mapping that replays ``run`` (its workload comes from the run, not from here)."""
    e = engine_settings(run)
    if not run.model:
        raise VidurError(f"run {run.name}: meta.json names no model")
    sched: dict = {"name": policy, "max_num_seqs": e["max_num_seqs"],
                   "max_num_batched_tokens": e["max_num_batched_tokens"]}
    if policy == "vllm_v1":
        sched["long_prefill_token_threshold"] = e["long_prefill_token_threshold"]
        sched["async_scheduling"] = e["async_scheduling"]
        if "cudagraph_capture_sizes" in e:
            sched["cudagraph_capture_sizes"] = e["cudagraph_capture_sizes"]
    else:  # sarathi: the nearest older policy
        sched = {"name": policy, "max_batch_size": e["max_num_seqs"], "chunk_size": e["max_num_batched_tokens"]}
    planner = {
        "name": "paged",
        "block_size": e["block_size"],
        "gpu_memory_utilization": e["gpu_memory_utilization"],
        "max_batch_tokens": e["max_num_batched_tokens"],
        "max_num_seqs": e["max_num_seqs"],
    }
    if e["num_gpu_blocks"]:
        planner["num_gpu_blocks_override"] = int(e["num_gpu_blocks"])
    estimator: dict = {"name": "roofline"}
    if calibration is not None:
        estimator.update(calibration.roofline_overrides())
    return {
        "model": run.model,
        "cluster": {"device": device_of(run), "tensor_parallel": e["tensor_parallel_size"]},
        "replica_scheduler": sched,
        "memory_planner": planner,
        "runtime_estimator": estimator,
        "workload": {"num_requests": len(run)},
        "metrics": {"tables": False},
        "simulation": {"progress": False},
    }


def simulate_run(run: RealRun, calibration=None, *, policy: str = "vllm_v1", serial_host: bool = False):
    """Run the replay; returns the :class:`~vidur.engine.simulation.Simulation` result. ``serial_host``:
    price each step's host work after its GPU work even under async scheduling (a what-if)."""
    from vidur.engine.simulation import Simulation
    from vidur.scenario import scenario_from_dict

    sim = Simulation(
        scenario_from_dict(scenario_dict(run, calibration, policy=policy)), requests=run.table, serial_host=serial_host
    )
    return sim.run(progress=False)


def replay(run: RealRun, calibration=None, *, policy: str = "vllm_v1", serial_host: bool = False) -> tuple[dict, str]:
    """Simulated statistics of ``run`` (as :func:`run_stats`) and the estimator's description."""
    res = simulate_run(run, calibration, policy=policy, serial_host=serial_host)
    return result_stats(res), res.estimator


def replay_with_estimator(run: RealRun, calibration=None, *, policy: str = "vllm_v1") -> tuple[dict, object]:
    """Simulated statistics of ``run`` and the runtime estimator object that priced it."""
    from vidur.engine.simulation import Simulation
    from vidur.scenario import scenario_from_dict

    sim = Simulation(scenario_from_dict(scenario_dict(run, calibration, policy=policy)), requests=run.table)
    return result_stats(sim.run(progress=False)), sim.estimator


def result_stats(res) -> dict:
    """:func:`run_stats` of a simulation result, with vLLM's definitions."""
    r = res.records.requests
    ttft = r["first_token"] - r["arrival"]
    e2e = r["completion"] - r["arrival"]
    out = r["output_tokens"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (r["completion"] - r["first_token"]) / (out - 1), np.nan)
    return run_stats(ttft, tpot, e2e)
