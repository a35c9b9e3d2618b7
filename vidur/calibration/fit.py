"""Fit the roofline estimator's free parameters to measured serving runs.

Real per-request measurements (:class:`~vidur.validate.real_runs.RealRun`) say nothing
about single iterations, so the fit is done the way a user feels the result: each trial
parameter set replays every training run in the simulator (:mod:`vidur.calibration.replay`)
and scores the mean, p50, p90 and p99 of TTFT, TPOT and E2E against the measured ones. The
objective is the mean |log(sim / real)| over those statistics (TPOT counts twice: it is
what the per-iteration cost model is responsible for; TTFT and E2E add queueing),
averaged with the decode-step error of the run's prompt-free seconds when its
``timeseries.csv`` has any (:mod:`vidur.calibration.steps`: those seconds time single
decode iterations, which pins the bandwidth efficiencies and leaves the served statistics
to the compute and link terms). The decode step is priced as the replay prices it: under
async scheduling the larger of GPU and host time, not their sum (the sum made the two halves
of the objective disagree: bench_real's leave-one-out 9.5 % -> 7.7 %). It is minimised by coordinate descent over a grid per parameter, a few rounds.

Regularisation: a handful of runs (the shared data has three, on two devices and two
models) cannot pin down several efficiencies at once: an unpenalised fit trades one for
another (memory efficiency 0.70 with one pair of runs, 1.00 with another) and transfers
worse than the defaults. So the objective adds a prior toward the defaults,
``PRIOR_WEIGHT x mean over fitted efficiencies of |log(value / default)|``: an efficiency
leaves its default only when the training runs agree that it should, by more than the
prior costs. ``PRIOR_WEIGHT`` (0.5) was chosen before scoring: moving an efficiency 10 %
from its default must buy at least a 5 % lower mean |log error| on the training runs,
divided among the fitted parameters.

The parameters are device-independent fractions and host-side seconds, so a calibration
fitted on one GPU transfers, imperfectly, to another:

- ``memory_efficiency``: achieved / peak bandwidth of weight reads (GEMMs at small batch);
- ``decode_attention_efficiency``: achieved / peak bandwidth of decode attention (KV reads);
- ``compute_efficiency`` and ``prefill_attention_efficiency``: achieved / peak FLOP/s;
- ``cpu_base_s`` and ``cpu_per_seq_s``: host work per step (hidden under async scheduling
  unless it exceeds the GPU step; fitted only when asked);
- ``launch_overhead_s``: GPU time per kernel launch beyond its work (gaps between the
  kernels of a step, a fixed cost per step); no prior (bench_real's leave-one-out 7.7 % ->
  6.9 % when fitted: the RTX PRO 6000 runs' steps are ~2 ms longer than priced);
- ``comm_bandwidth``: the bottleneck link of tensor-parallel all-reduces, fitted when a
  training run has TP > 1 (NCCL over PCIe reaches well under the link's nominal rate).
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np

from vidur.calibration.replay import METRICS, STATS, device_of, replay, run_stats
from vidur.errors import VidurError
from vidur.validate.real_runs import RealRun

#: parameter -> grid searched (roofline config fields)
GRIDS: dict[str, np.ndarray] = {
    "memory_efficiency": np.round(np.arange(0.50, 1.001, 0.05), 3),
    "decode_attention_efficiency": np.round(np.arange(0.40, 1.001, 0.05), 3),
    "compute_efficiency": np.round(np.arange(0.40, 1.001, 0.05), 3),
    "prefill_attention_efficiency": np.round(np.arange(0.30, 1.001, 0.1), 3),
    "cpu_base_s": np.array([0.0, 1e-3, 2e-3, 4e-3, 8e-3]),
    "cpu_per_seq_s": np.array([0.0, 10e-6, 20e-6, 40e-6, 80e-6]),
    "launch_overhead_s": np.array([1e-6, 3e-6, 5e-6, 7e-6, 9e-6, 12e-6, 16e-6]),
    # bytes/s of the TP collective's bottleneck link (fitted only from runs with TP > 1)
    "comm_bandwidth": np.array([6e9, 8e9, 10e9, 12e9, 15e9, 20e9, 25e9, 35e9, 50e9]),
}
#: what ``fit_runs`` fits unless told otherwise: the host terms are hidden under async
#: scheduling at the batch sizes of typical runs, so they are left at their defaults; the
#: per-kernel launch overhead is a GPU-side cost per step that the efficiencies cannot express
DEFAULT_PARAMS = ("memory_efficiency", "decode_attention_efficiency", "compute_efficiency", "launch_overhead_s")


@attrs.frozen
class Calibration:
    """Fitted roofline parameters (``params``: RooflineConfig fields) and what they were fitted on."""

    params: dict
    fitted_on: tuple = ()
    devices: tuple = ()
    models: tuple = ()
    objective_before: float | None = None
    objective_after: float | None = None

    def roofline_overrides(self) -> dict:
        """The roofline config fields this calibration sets."""
        return {k: float(v) for k, v in self.params.items()}

    def describe(self) -> str:
        """One line: the values and what they were fitted on."""
        p = ", ".join(
            f"{k} {v * 1e6:.3g} us" if k.endswith("_s") else f"{k} {v / 1e9:.3g} GB/s" if k == "comm_bandwidth"
            else f"{k} {v:.2f}" for k, v in self.params.items()
        )
        where = f" on {', '.join(self.fitted_on)}" if self.fitted_on else ""
        return f"fitted{where}: {p}"

    def fitted_from(self) -> str:
        """What a calibration file says it was fitted on."""
        return (f"vidur calibrate: {len(self.fitted_on)} real vLLM run(s) ({', '.join(self.fitted_on)}); "
                f"objective {self.objective_before} -> {self.objective_after} on those runs")
WEIGHTS = {"ttft": 1.0, "tpot": 2.0, "e2e": 1.0}
#: weight of the prior toward the defaults (module docstring)
PRIOR_WEIGHT = 0.5


def prior_penalty(params: dict, prior: dict, weight: float = PRIOR_WEIGHT) -> float:
    """``weight`` x mean |log(value / prior)| over the parameters with a positive prior (0 if none)."""
    terms = [abs(math.log(v / prior[k])) for k, v in params.items() if prior.get(k) and v > 0]
    return weight * float(np.mean(terms)) if terms else 0.0


def stats_error(real: dict, sim: dict) -> float:
    """Weighted mean |log(sim/real)| over METRICS x STATS."""
    total = weight = 0.0
    for m in METRICS:
        w = WEIGHTS[m]
        for s in STATS:
            r, v = real[m][s], sim[m][s]
            if r > 0 and v > 0 and math.isfinite(v):
                total += w * abs(math.log(v / r))
            else:
                total += w * 10.0
            weight += w
    return total / weight


def abs_errors(real: dict, sim: dict) -> dict[str, list[float]]:
    """|sim/real - 1| per metric, one per statistic."""
    return {m: [abs(sim[m][s] / real[m][s] - 1.0) for s in STATS] for m in METRICS}


def _score(runs: Sequence[RealRun], reals: list[dict], params: dict, samples: list | None = None) -> float:
    """Mean over runs of the run's error: :func:`stats_error`, averaged with the decode-step error
    (:func:`vidur.calibration.steps.step_error`) when the run has prompt-free seconds."""
    from vidur.calibration.replay import engine_settings, replay_with_estimator
    from vidur.calibration.steps import decode_seconds, step_error

    cal = Calibration(params=dict(params))
    errs = []
    for i, (run, real) in enumerate(zip(runs, reals)):
        stats, est = replay_with_estimator(run, calibration=cal)
        e = stats_error(real, stats)
        if samples is not None and samples[i]:  # the decode step as the replay prices it (host overlap)
            overlap = bool(engine_settings(run)["async_scheduling"])
            e = 0.5 * (e + step_error(decode_seconds(run, est, samples=samples[i], overlap=overlap)))
        errs.append(e)
    return float(np.mean(errs))


def same_device_runs(runs: Sequence[RealRun], device: str) -> list[RealRun]:
    """The runs whose fit can say something about a run on ``device``: those on the same device.

    Efficiencies are fractions of a datasheet peak, and how close a kernel gets to the peak
    differs between GPUs (GDDR6X against GDDR7, cache sizes, clocks under load): on the shared
    runs one generic bandwidth efficiency was 10 % slow on the RTX 4090 and 7 % fast on the RTX PRO 6000 at once,
    so efficiencies fitted on one device moved the other the wrong way (leave-one-out worse
    than the defaults). A calibration is therefore per device, as ``vidur calibrate`` writes it.
    """
    return [r for r in runs if device_of(r) == device]


def _shared_memory_efficiency(runs: Sequence[RealRun]) -> float:
    """The default ``memory_efficiency`` of the one device ``runs`` share (catalog, plugin or
    device file, as a scenario resolves it), else the generic default."""
    from vidur.estimate.roofline import DEFAULT_MEMORY_EFFICIENCY, device_memory_efficiency
    from vidur.resolve.device import resolve_device

    devices = {device_of(r) for r in runs}
    if len(devices) != 1:
        return DEFAULT_MEMORY_EFFICIENCY
    try:
        return device_memory_efficiency(resolve_device(devices.pop()).spec)
    except VidurError:  # a device the simulator does not know: replaying the runs says so
        return DEFAULT_MEMORY_EFFICIENCY


def fit_runs(runs: Sequence[RealRun], *, rounds: int = 3, params: Sequence[str] | None = None,
             start: dict | None = None, prior_weight: float = PRIOR_WEIGHT) -> Calibration:
    """Fit the parameters to ``runs`` (all of them: hold out what you score on), pulled toward the
    starting values (the defaults, or ``start``) by :func:`prior_penalty` with ``prior_weight``
    (0: an unregularised fit). The objectives reported are the fit error without the prior."""
    from vidur.estimate.roofline import RooflineConfig

    from vidur.calibration.replay import engine_settings

    names = list(params or DEFAULT_PARAMS)
    if params is None and any(engine_settings(r)["tensor_parallel_size"] > 1 for r in runs):
        names.insert(0, "comm_bandwidth")  # first: a missing link cost would bend every efficiency
    # the prior starts from the device's own default (its published bandwidth figure) when the runs share one
    base = RooflineConfig(memory_efficiency=_shared_memory_efficiency(runs))

    def initial(k):
        if k in (start or {}):
            return start[k]
        if k == "comm_bandwidth":
            return 25e9
        return base.resolved(k) if k.startswith("cpu") or k == "launch_overhead_s" else getattr(base, k)

    current = {k: initial(k) for k in names}
    prior = {k: v for k, v in current.items() if k.endswith("_efficiency")}  # link and host terms: free
    reals = [run_stats(r.ttft, r.tpot, r.e2e) for r in runs]
    from vidur.calibration.steps import decode_samples

    samples = [decode_samples(r) for r in runs]
    before = fit_err = _score(runs, reals, current, samples)
    best = fit_err  # the prior term is 0 at the start
    for _ in range(rounds):
        changed = False
        for name in names:
            for v in GRIDS[name]:
                v = float(v)
                if v == current[name]:
                    continue
                trial = dict(current, **{name: v})
                penalty = prior_penalty(trial, prior, prior_weight)
                if penalty >= best:  # cannot win whatever the fit error
                    continue
                e = _score(runs, reals, trial, samples)
                if e + penalty < best - 1e-9:
                    best, fit_err, current, changed = e + penalty, e, trial, True
        if not changed:
            break
    return Calibration(
        params=current,
        devices=tuple(sorted({device_of(r) for r in runs})),
        models=tuple(sorted({r.model or "?" for r in runs})),
        fitted_on=tuple(r.name for r in runs),
        objective_before=round(before, 5),
        objective_after=round(fit_err, 5),
    )



