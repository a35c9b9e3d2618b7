"""``vidur validate``: the same scheduler drives a real model and the simulator.

:func:`validate_scenario` runs a scenario twice on one request table:

1. **real**: the scenario's replica (and global) scheduler forms batches in
   the simulator's event loop, but every batch runs on the
   :class:`~vidur.reference.executor.ReferenceExecutor` and the clock
   advances by its measured wall time (``EventLoop(executor=...)``, no
   fast-forward). Each batch is also priced by the estimator, so iteration
   errors compare prediction and measurement on the same batches;
2. **simulated**: the plain simulation with the estimator fitted on this
   device's profile (``profile``), or the one the scenario or ``--estimator``
   names.

Both sides price what the executor does: a policy that models host overlap
(vLLM V1's async scheduling, SGLang's overlap scheduler) is priced serially
(device + host, ``Simulation(serial_host=True)``) unless the executor
overlaps host and device work (``overlaps_host``; the reference executor does
not), and the report says so in a note and in ``run.host_overlap``; decode
batches are padded to the executor's CUDA-graph sizes (none on the CPU), not
the policy's (``cuda_graph_sizes``), with a note when they differ.

Then it compares the two at every level (:mod:`vidur.validate.compare`).
The executor is built for one device: tensor and pipeline parallelism must
be 1; several replicas are emulated by running their batches one after the
other, each timed on its own.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.plugins import PluginHost, get_host
from vidur.scenario import Policy, Scenario
from vidur.validate.pace import PACE_EVERY_S, measure_pace, pace_note, pace_report, recorded_pace
from vidur.validate.rescore import predict_iteration
from vidur.validate.compare import (
    RequestTimings,
    cluster_errors,
    format_report,
    iteration_errors,
    iteration_kind,
    plot_cdfs,
    plot_iterations,
    plots_available,
    request_errors,
    write_json,
)

ITERATION_COLUMNS = (
    "replica",
    "start_s",
    "kind",
    "num_prefill",
    "prefill_tokens",
    "prefill_work",
    "prefill_kv",
    "prefill_sq",
    "num_decode",
    "decode_kv",
    "measured_ms",
    "measured_forward_ms",
    "predicted_ms",
    "predicted_forward_ms",
)


@attrs.define
class ValidationResult:
    """What :func:`validate_scenario` returns: the report dict plus the raw data behind it."""

    report: dict
    iterations: dict[str, np.ndarray]
    real: RequestTimings
    sim: RequestTimings
    real_records: Any
    sim_records: Any




def _target(scenario: Scenario, model, host: PluginHost, engine_mode: str | None = None):
    """The replica the simulated side prices, and where its device came from."""
    from vidur.estimate.base import PricingTarget
    from vidur.resolve.device import resolve_device

    cl = scenario.cluster
    dev = resolve_device(cl.device, host, node=cl.node, device_file=cl.device_file)
    return PricingTarget(model, dev.spec, dev.node, cl.tensor_parallel, cl.pipeline_parallel, engine_mode=engine_mode), dev.source


def choose_estimator(scenario: Scenario, model, host: PluginHost, requested: str | None, device_type: str):
    """The estimator that prices the simulated side (a :class:`~vidur.resolve.estimator.ResolvedEstimator`).

    ``requested`` (``--estimator``) wins; else the scenario's choice. Under ``auto`` the simulated
    side must be priced from measurements of this model: when ``auto`` falls back to its last
    estimator because the measured ones declined (no profile of this device, model and TP), that
    is an error saying how to profile. The engine mode is matched to the executor afterwards
    (:func:`match_engine_mode`).
    """
    from vidur.resolve.estimator import auto_candidates, resolve_estimator

    cl = scenario.cluster
    target, dev_source = _target(scenario, model, host)
    pol = scenario.runtime_estimator
    if requested:
        cls = host.get("runtime_estimator", requested)
        name, cfg = requested, (pol.config if pol.name == requested else cls.Config())
    else:
        name, cfg = pol.name, pol.config
    resolved = resolve_estimator(name, cfg, target, host, device_source=dev_source)
    cands = auto_candidates(host)
    if name == "auto" and resolved.provenance.skipped and cands and resolved.name == cands[-1][1]:
        raise VidurError(
            f"no profile of {model.name} on device {cl.device} (tp={cl.tensor_parallel}) to price the simulated side "
            f"({'; '.join(resolved.provenance.skipped)}); run `vidur profile --model {model.name} --device {device_type} "
            f"--tp {cl.tensor_parallel}` on this machine first, or pass --estimator roofline"
        )
    return resolved


def match_engine_mode(scenario: Scenario, model, host: PluginHost, resolved, device_type: str, graph_max_batch: int, notes: list[str]):
    """The estimator with the executor's engine mode (CUDA graphs up to ``graph_max_batch``, else eager)
    on CUDA; unchanged on the CPU."""
    from vidur.resolve.estimator import resolve_estimator

    if device_type != "cuda":
        return resolved
    mode = "cuda_graphs" if graph_max_batch else "eager"
    target, dev_source = _target(scenario, model, host, engine_mode=mode)
    extra = {"cuda_graph_max_batch": graph_max_batch} if graph_max_batch else {}
    again = resolve_estimator(
        resolved.name, resolved.config, target, host, strict_engine_mode=False, extra=extra,
        engine_mode_reason="the reference executor's", device_source=dev_source,
    )
    if again.config != resolved.config:
        what = ", ".join(f"{k}: {v}" for k, v in {"engine_mode": mode, **extra}.items())
        notes.append(f"estimator set to the executor's engine mode ({what})")
    return attrs.evolve(again, provenance=attrs.evolve(
        again.provenance, requested=resolved.provenance.requested, reason=resolved.provenance.reason,
        skipped=resolved.provenance.skipped, calibration=resolved.provenance.calibration,
        fitted_from=resolved.provenance.fitted_from,
    ))


def host_overlap(sim, executor, device_type: str) -> dict:
    """Whether the replica scheduler of ``sim`` models host overlap (``policy``), whether the
    executor overlaps host and device work (``executor``), whether the simulated side prices
    overlap (``priced``: only when both do) and the report's note when they disagree (else None).

    A policy's ``host_overlap`` (vLLM V1's async scheduling, SGLang's overlap scheduler) prices a
    step as max(device, host); an executor that runs them one after the other takes their sum, so
    comparing the two would charge the executor's serial host time to the simulator."""
    policy = any(st.overlap for st in sim.replica_states)
    by_executor = bool(getattr(executor, "overlaps_host", False))
    note = None
    if policy and not by_executor:
        why = (
            "on the CPU host work and forward pass share one processor" if device_type == "cpu"
            else "it has no async scheduling"
        )
        note = (
            f"host overlap not priced: the {sim.scenario.replica_scheduler.name} scheduler models an engine that "
            f"overlaps each step's host work with the previous step's device work (a step takes max(device, host)), "
            f"but the reference executor runs them one after the other ({why}), so the simulated side prices every "
            f"step as device + host, as the real side runs it"
        )
    return {"policy": policy, "executor": by_executor, "priced": policy and by_executor, "note": note}


def _sizes_text(sizes) -> str:
    if not sizes:
        return "none"
    return ", ".join(map(str, sizes)) if len(sizes) <= 6 else f"{sizes[0]}, {sizes[1]}, {sizes[2]}, ..., {sizes[-1]}"


def graph_sizes_note(sim, executor_sizes) -> str | None:
    """A note when the replica scheduler of ``sim`` models CUDA-graph batch sizes (``cuda_graph_sizes``)
    other than the executor's, which both sides then use; None otherwise."""
    sizes = tuple(getattr(sim.replica_states[0].scheduler, "cuda_graph_sizes", None) or ())
    if not sizes or sizes == tuple(executor_sizes):
        return None
    ex = tuple(executor_sizes)
    runs = f"decode batches padded to {_sizes_text(ex)}" if ex else "no CUDA graphs"
    return (
        f"CUDA-graph padding priced as the executor runs it ({runs}), not as the "
        f"{sim.scenario.replica_scheduler.name} scheduler models its engine (batches padded to {_sizes_text(sizes)})"
    )


def _check_validatable(scenario: Scenario) -> None:
    cl = scenario.cluster
    if cl.tensor_parallel != 1 or cl.pipeline_parallel != 1:
        raise VidurError(
            f"vidur validate runs each replica on one device: set cluster.tensor_parallel and "
            f"cluster.pipeline_parallel to 1 (got {cl.tensor_parallel} and {cl.pipeline_parallel})"
        )


def attention_mismatch(estimator, kernel: str) -> str | None:
    """A note when the estimator's profile measured another attention kernel than the executor runs."""
    from vidur.reference.attention import kernel_name

    profile = getattr(estimator, "profile", None)
    if profile is None:
        return None
    tp = getattr(estimator, "tp", 1)
    recorded = profile.metadata.get("shards", {}).get(str(tp), {}).get("attention_backend")
    measured = kernel_name(recorded)
    if measured is None or measured == kernel:
        return None
    return (
        f"the profile measured attention with the {measured} kernel but the executor runs {kernel}: "
        f"attention predictions compare different kernels; re-profile on this machine (`vidur profile`)"
    )


def _check_device_match(scenario: Scenario, device_type: str, notes: list[str]) -> None:
    from vidur.reference.device import gpu_sku

    dev = scenario.cluster.device
    if device_type == "cpu":
        if dev != "cpu":
            raise VidurError(
                f"the scenario prices device {dev!r} but the reference executor runs on the CPU; "
                f"set cluster.device: cpu (-s cluster.device cpu) or run with --device cuda on a {dev}"
            )
        return
    import torch

    name = torch.cuda.get_device_name()
    sku = gpu_sku(name)
    if sku is not None and sku != dev:
        raise VidurError(
            f"the scenario prices device {dev!r} but this GPU is {name}; set cluster.device: {sku} (-s cluster.device {sku})"
        )
    if sku is None:
        notes.append(f"cannot tell whether this GPU ({name}) is the scenario's device {dev!r}")


def _warmup_shapes(scenario: Scenario, table) -> tuple[list[int], list[int]]:
    """Token counts to run once before timing, and decode batch sizes.

    The first iteration with a new token count pays one-off costs (GEMM
    heuristics, allocator growth) that a long-running server has long paid:
    every count an iteration can have is warmed up when there are at most
    1024 of them (a chunked scheduler's budget), else a geometric grid.
    """
    cfg = scenario.replica_scheduler.config
    longest = int(table.prompt.max())
    chunk = getattr(cfg, "chunk_size", None)
    limit = int(chunk) if chunk else longest
    if limit <= 1024:
        pre = list(range(1, limit + 1))
    else:
        pre = sorted({min(limit, round(1.15**i)) for i in range(200) if 1.15**i < limit * 1.15})
    max_b = int(getattr(cfg, "max_batch_size", 32) or len(table))  # None: no cap of its own (sglang derives one)
    dec = sorted({1, min(8, max_b), min(max_b, len(table), 64)})
    return pre, dec


def validate_scenario(
    scenario: Scenario,
    *,
    device: str | None = None,
    estimator: str | None = None,
    threads: int | None = 1,
    attention: str | None = None,
    cuda_graphs: bool = True,
    host: PluginHost | None = None,
    warmup: bool = True,
    progress: bool = False,
) -> ValidationResult:
    """Run ``scenario`` for real (reference executor) and simulated; compare them.

    ``cuda_graphs``: decode-only batches replay CUDA graphs (CUDA only), as
    vLLM does; the estimator's engine mode follows.
    """
    from vidur.engine.loop import EventLoop
    from vidur.engine.simulation import Simulation
    from vidur.model.catalog import load_model
    from vidur.reference.device import torch_device
    from vidur.reference.executor import ReferenceExecutor, check_supported

    host = host or get_host()
    _check_validatable(scenario)
    model = load_model(scenario.model, host)
    check_supported(model)  # before anything slow
    device_type = torch_device(device).type
    notes: list[str] = []
    _check_device_match(scenario, device_type, notes)
    resolved = choose_estimator(scenario, model, host, estimator, device_type)
    policy = Policy(resolved.name, resolved.config)
    sim_opts = attrs.evolve(scenario.simulation, fast_forward=False, progress=False)
    probe = Simulation(scenario.replace(runtime_estimator=policy, simulation=sim_opts), host)
    table = probe.table
    caps = (table.prompt + table.output).astype(np.int64)
    kv_cap = sum(r.scheduler.kv.num_blocks * r.scheduler.kv.block_size for r in probe.replica_states)
    kv_cap = min(kv_cap, int(caps.sum()))
    max_batch = int(getattr(scenario.replica_scheduler.config, "max_batch_size", 128) or len(table))
    held = max_batch * scenario.cluster.num_replicas
    reserved = int(min(caps.sum(), kv_cap + held * int(caps.max())))
    ex = ReferenceExecutor(
        model,
        device_type,
        max_kv_tokens=kv_cap,
        reserved_tokens=reserved,
        max_batch_tokens=max(int(table.prompt.max()), 512),
        max_seq_tokens=min(int(caps.max()) + 1, model.max_position_embeddings),
        max_requests=len(table),
        attention=attention,
        threads=threads,
        seed=scenario.seed,
    )
    if warmup:
        pre, dec = _warmup_shapes(scenario, table)
        ex.warmup(pre, dec, steps=1)
    gmax = ex.capture_graphs(min(max_batch, 256)) if (cuda_graphs and device_type == "cuda") else 0
    if gmax and warmup:
        ex.warmup((), [b for b in (1, 8, gmax) if b <= gmax])
    resolved = match_engine_mode(scenario, model, host, resolved, device_type, gmax, notes)
    policy = Policy(resolved.name, resolved.config)
    sc = scenario.replace(runtime_estimator=policy, simulation=sim_opts)
    overlap = host_overlap(probe, ex, device_type)
    if overlap["note"]:
        notes.append(overlap["note"])
    serial = overlap["policy"] and not overlap["priced"]
    graphs = ex.graph_sizes
    note = graph_sizes_note(probe, graphs)
    if note:
        notes.append(note)
    real_sim = Simulation(sc, host, requests=table, serial_host=serial, cuda_graph_sizes=graphs)
    est = real_sim.estimator
    provenance = resolved.completed(est)
    notes += [provenance.header()] + provenance.notes()
    notes.append(f"real side: {ex.description}")
    notes.append(f"simulated side: {est.describe()}")
    mismatch = attention_mismatch(est, ex.kernel)
    if mismatch:
        notes.append(mismatch)
    recorded = recorded_pace(est) if device_type == "cpu" else None
    paces = [measure_pace(ex)] if recorded else []
    last_pace = [time.perf_counter()]

    rows: list[tuple] = []

    schedulers = [st.scheduler for st in real_sim.replica_states]

    def run_batch(replica: int, batch) -> float:
        for sched in schedulers:  # lazy decode groups: make every request's kv_len current
            sched.sync_decoding()
        if recorded and time.perf_counter() - last_pace[0] > PACE_EVERY_S:  # the host's pace moves during the run
            paces.append(measure_pace(ex, calls=3))
            last_pace[0] = time.perf_counter()
        t = ex.execute(batch)
        s = batch.shape
        pred, fwd = predict_iteration(est, s, overlap["priced"])
        rows.append(
            (replica, batch.start, s.num_prefill, s.prefill_tokens, s.prefill_work, s.num_decode, s.decode_kv,
             t.wall_s, t.forward_s, pred, fwd, s.prefill_kv, s.prefill_sq)
        )
        return t.wall_s

    source = real_sim.request_source()
    if real_sim.table.content is not None:
        tree = real_sim.table.content.tree
        ex.content_tree = (tree.parent.tolist(), tree.start.tolist())
    bar = None
    on_complete = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(source), unit="req", desc="real run", delay=2.0, leave=False, mininterval=0.5)
        on_complete = bar.update
    loop = EventLoop(
        source, real_sim.replica_states, real_sim.router,
        fast_forward=False, max_time=sc.simulation.max_time, on_complete=on_complete, executor=run_batch,
    )
    t0 = time.perf_counter()
    try:
        makespan = loop.run()
        real_wall = time.perf_counter() - t0
        if recorded:
            paces.append(measure_pace(ex))
    finally:
        if bar is not None:
            bar.close()
        ex.release()
    if ex.prefix_fills:
        notes.append(
            f"prefix caching: {ex.prefix_fills} prefills started after cached tokens; the executor built their "
            "KV outside the timed region and timed only the uncached tokens"
        )
    host_pace = pace_report(recorded, paces)
    note = pace_note(host_pace)
    if note:
        notes.append(note)
    real_records = real_sim._records(loop, makespan, real_wall)

    sim_scenario = scenario.replace(runtime_estimator=policy, simulation=attrs.evolve(scenario.simulation, progress=False))
    t0 = time.perf_counter()
    sim_result = Simulation(
        sim_scenario, host, requests=table, serial_host=serial, cuda_graph_sizes=graphs
    ).run(progress=False)
    sim_wall = time.perf_counter() - t0

    it = _iteration_columns(rows)
    real = RequestTimings.from_records(real_records)
    sim = RequestTimings.from_records(sim_result.records)
    report = {
        "kind": "vidur-validation/1",
        "title": f"vidur validate: {model.name} on {scenario.cluster.device} ({device_type}), "
        f"{scenario.replica_scheduler.name} scheduler, {len(table)} requests",
        "notes": notes,
        "run": {
            "model": model.name,
            "device": scenario.cluster.device,
            "torch_device": device_type,
            "executor": ex.description,
            "attention": ex.attention,
            "cuda_graph_max_batch": ex.graph_max_batch,
            "cuda_graph_sizes": list(graphs),
            "graph_iterations": ex.graph_iterations,
            "estimator": est.describe(),
            "estimator_name": policy.name,
            "provenance": provenance.to_dict(),
            "replica_scheduler": scenario.replica_scheduler.name,
            "replicas": scenario.cluster.num_replicas,
            "num_requests": len(table),
            "iterations_real": len(it["kind"]),
            "iterations_sim": sim_result.records.num_batches,
            "real_wall_s": round(real_wall, 3),
            "sim_wall_s": round(sim_wall, 3),
            "host_pace": host_pace,
            "host_overlap": {k: overlap[k] for k in ("policy", "executor", "priced")},
        },
        "iterations": iteration_errors(it["predicted_ms"] / 1e3, it["measured_ms"] / 1e3, it["kind"]),
        "iterations_forward": iteration_errors(it["predicted_forward_ms"] / 1e3, it["measured_forward_ms"] / 1e3, it["kind"]),
        "requests": request_errors(real, sim),
        "cluster": cluster_errors(real, sim),
    }
    from vidur.metrics.prefix import prefix_cache_summary

    real_cache, sim_cache = prefix_cache_summary(real_records), prefix_cache_summary(sim_result.records)
    if real_cache is not None or sim_cache is not None:
        report["prefix_cache"] = {"real": real_cache and real_cache["cluster"], "sim": sim_cache and sim_cache["cluster"]}
    return ValidationResult(report, it, real, sim, real_records, sim_result.records)


def _iteration_columns(rows: list[tuple]) -> dict[str, np.ndarray]:
    a = np.array(rows, dtype=np.float64).reshape(-1, 13)
    return {
        "replica": a[:, 0].astype(np.int64),
        "start_s": a[:, 1],
        "kind": iteration_kind(a[:, 2], a[:, 5]),
        "num_prefill": a[:, 2].astype(np.int64),
        "prefill_tokens": a[:, 3].astype(np.int64),
        "prefill_work": a[:, 4],
        "prefill_kv": a[:, 11].astype(np.int64),
        "prefill_sq": a[:, 12].astype(np.int64),
        "num_decode": a[:, 5].astype(np.int64),
        "decode_kv": a[:, 6].astype(np.int64),
        "measured_ms": a[:, 7] * 1e3,
        "measured_forward_ms": a[:, 8] * 1e3,
        "predicted_ms": a[:, 9] * 1e3,
        "predicted_forward_ms": a[:, 10] * 1e3,
    }


def write_iterations_csv(path: str | Path, it: dict[str, np.ndarray]) -> None:
    """One row per real iteration: its shape, measured and predicted times (ms)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ITERATION_COLUMNS)
        n = len(it["kind"])
        for i in range(n):
            w.writerow([_cell(it[c][i]) for c in ITERATION_COLUMNS])


def write_requests_csv(path: str | Path, real: RequestTimings, sim: RequestTimings) -> None:
    """One row per request: measured and simulated TTFT, TPOT and E2E (ms)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["request", "ttft_real_ms", "ttft_sim_ms", "tpot_real_ms", "tpot_sim_ms", "e2e_real_ms", "e2e_sim_ms"])
        for i in range(len(real)):
            w.writerow(
                [i] + [_cell(1e3 * getattr(x, m)[i]) for m in ("ttft", "tpot", "e2e") for x in (real, sim)]
            )


def _cell(x) -> str:
    if isinstance(x, (str, np.str_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not np.isfinite(x):
        return ""
    return f"{x:.6g}"


def write_outputs(result: ValidationResult, out_dir: str | Path, *, plots: bool = True) -> list[str]:
    """Write the report (JSON, table), per-iteration and per-request CSVs and plots; return the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = ["validation.json", "summary.txt", "iterations.csv", "requests.csv"]
    write_json(out / "validation.json", result.report)
    (out / "summary.txt").write_text(format_report(result.report), encoding="utf-8")
    write_iterations_csv(out / "iterations.csv", result.iterations)
    write_requests_csv(out / "requests.csv", result.real, result.sim)
    if plots and plots_available():
        it = result.iterations
        plot_iterations(
            out / "iterations.png", it["predicted_ms"] / 1e3, it["measured_ms"] / 1e3, it["kind"],
            f"{result.report['run']['model']} on {result.report['run']['device']}: predicted vs measured",
        )
        plot_cdfs(out / "latency_cdf.png", result.real, result.sim, "measured (solid) vs simulated (dashed)")
        written += ["iterations.png", "latency_cdf.png"]
    return written
