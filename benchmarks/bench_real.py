"""How close is the simulator to real vLLM V1? Replays measured runs exactly.

For every run folder in ``../shared/data/real-vllm/`` (vLLM 0.19 V1 engine, per-request
engine timestamps; see that folder's README) this replays the same requests (arrival =
``queued_ts - min(queued_ts)``, the same prompt and output lengths) under the run's engine
settings (``max_num_seqs``, ``max_num_batched_tokens``, TP, block size, KV block count from
``meta.json`` when it was saved, else vLLM's own computation) and prints TTFT, TPOT and E2E
at mean/p50/p90/p99, real against simulated:

In its prompt-free seconds the run's ``timeseries.csv`` also gives the real decode step
(:mod:`vidur.calibration.steps`): (a) prints the default estimator's step over the real
one there, which separates the per-iteration cost model from queueing (device + host, and
as the simulator prices a step under vLLM V1's async scheduling: max(device, host)). In
its saturated seconds with prompt tokens it gives the real mixed step (prefill chunks
batched with decodes) and, fitted over those seconds, the real marginal cost of a prompt
token beside the estimator's (also with the decode steps at their real, decode-only cost).

(a) with the simulator's defaults (no knowledge of the measurements);
(b) calibrated leave-one-run-out: the estimator's free parameters fitted
    (:mod:`vidur.calibration`, with its prior toward the defaults) on the *other* runs of
    the same device, then scored on this one. Efficiencies are per device
    (:func:`~vidur.calibration.fit.same_device_runs`): a run with no other run on its
    device keeps the defaults, and (b) says so.

The last line is ``leave-one-out median |err| X % (TTFT a %, TPOT b %, E2E c %)``: the
median over runs and over the four statistics of |sim/real - 1|.

Usage: ``python benchmarks/bench_real.py [--data DIR] [--runs NAME ...] [--defaults-only]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from vidur.calibration.replay import METRICS, STATS, replay, run_stats
from vidur.validate.real_runs import RealRun, load_real_run


def find_real_dir(explicit: str | None) -> Path:
    """``--data``, ``$VIDUR_DATA_DIR``/real-vllm, or ``../shared/data/real-vllm`` beside the checkout."""
    root = Path(__file__).resolve().parents[1]
    candidates = [explicit]
    if os.environ.get("VIDUR_DATA_DIR"):
        candidates.append(str(Path(os.environ["VIDUR_DATA_DIR"]) / "real-vllm"))
    candidates += [str(root.parent / "shared" / "data" / "real-vllm"), str(root / "shared" / "data" / "real-vllm")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise SystemExit("cannot find shared/data/real-vllm; pass --data DIR or set VIDUR_DATA_DIR")


def table(run: RealRun, sim: dict, label: str) -> list[float]:
    """Print real vs simulated statistics; return the |error| of every cell."""
    real = run_stats(run.ttft, run.tpot, run.e2e)
    print(f"  {label}")
    print(f"    {'metric':<6}{'stat':>6}{'real':>12}{'sim':>12}{'err':>9}")
    errs = []
    for m in METRICS:
        for s in STATS:
            r, v = real[m][s], sim[m][s]
            err = v / r - 1.0
            errs.append(abs(err))
            unit = 1e3 if m == "tpot" else 1.0
            u = "ms" if m == "tpot" else "s"
            print(f"    {m.upper():<6}{s:>6}{r * unit:>10.2f}{u:<2}{v * unit:>10.2f}{u:<2}{err:>+8.1%}")
    return errs


def decode_steps(run: RealRun) -> None:
    """Print the real step against the default estimator's: in the run's prompt-free seconds (decode
    steps), then in its saturated seconds with prompt tokens (mixed steps) with the marginal cost
    of a prompt token, real and estimated (:mod:`vidur.calibration.steps`)."""
    from vidur.calibration.replay import scenario_dict
    from vidur.calibration.steps import (
        BatchShape, decode_seconds, mixed_seconds, prompt_token_cost, step_time,
    )
    from vidur.engine.simulation import Simulation
    from vidur.scenario import scenario_from_dict

    sim = Simulation(scenario_from_dict(scenario_dict(run)), requests=run.table)
    est = sim.estimator
    overlap = sim.replica_states[0].overlap
    secs = decode_seconds(run, est)
    as_sim = None
    if not secs:
        print("  (a) decode-only seconds: none in timeseries.csv")
    else:
        ratio = np.array([s.estimated / s.real for s in secs])
        seqs = np.array([s.num_seqs for s in secs])
        real = np.array([s.real for s in secs])
        # the simulator prices a step as max(device, host) when the engine overlaps them (async scheduling)
        as_sim = float(np.median([step_time(est, BatchShape(num_decode=s.num_seqs, decode_kv=s.decode_kv),
                                            overlap=overlap) / s.real for s in secs]))
        hidden = f"; as simulated, host work overlapped: {as_sim:.2f}" if overlap else ""
        print(f"  (a) decode-only seconds (no prompt tokens; {len(secs)} s, {seqs.min()}-{seqs.max()} sequences): "
              f"real step median {np.median(real) * 1e3:.1f} ms, estimated / real median {np.median(ratio):.2f} "
              f"(p10 {np.percentile(ratio, 10):.2f}, p90 {np.percentile(ratio, 90):.2f}){hidden}")
    mixed = mixed_seconds(run, est, overlap=overlap)
    if not mixed:
        print("  (a) mixed seconds: none (no saturated second with prompt tokens, or timeseries.csv's prompt "
              "tokens do not match the requests' prompts)")
        return
    ratio = np.array([s.ratio for s in mixed])
    k = np.array([s.sample.num_decode for s in mixed])
    prompts = np.array([s.sample.prompt_tokens for s in mixed])
    cost = prompt_token_cost(mixed)
    rescaled = "" if as_sim is None else (
        f" ({prompt_token_cost(mixed, decode_scale=as_sim).real * 1e6:.0f} us on the real decode step)")
    print(f"  (a) mixed seconds (saturated, with prompt tokens; {len(mixed)} s, {k.min()}-{k.max()} decoding, "
          f"median {np.median(prompts):.0f} prompt tokens/s): estimated / real median {np.median(ratio):.2f} "
          f"(p10 {np.percentile(ratio, 10):.2f}, p90 {np.percentile(ratio, 90):.2f}); prompt token real "
          f"{cost.real * 1e6:.0f} ± {cost.real_se * 1e6:.0f} us{rescaled} vs estimated {cost.estimated * 1e6:.0f} us")


def signed(run: RealRun, sim: dict) -> list[float]:
    """sim / real - 1 for each metric and statistic, in :func:`table`'s order (nothing printed)."""
    real = run_stats(run.ttft, run.tpot, run.e2e)
    return [sim[m][s] / real[m][s] - 1.0 for m in METRICS for s in STATS]


def per_metric(errs: list[float]) -> dict[str, list[float]]:
    n = len(STATS)
    return {m: errs[i * n:(i + 1) * n] for i, m in enumerate(METRICS)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="the real-vllm folder (default ../shared/data/real-vllm)")
    ap.add_argument("--runs", nargs="*", help="run folder names (default: all)")
    ap.add_argument("--defaults-only", action="store_true", help="skip (b), the leave-one-out calibration")
    args = ap.parse_args(argv)
    root = find_real_dir(args.data)
    names = args.runs or sorted(p.name for p in root.iterdir() if (p / "requests.jsonl").is_file())
    runs = [load_real_run(root / n) for n in names]
    from vidur.calibration.fit import fit_runs, same_device_runs
    from vidur.calibration.replay import device_of

    default_errs: dict[str, dict] = {}
    serial_errs: dict[str, dict] = {}
    loo_errs: dict[str, dict] = {}
    for run in runs:
        print(f"\n== {run.name}: {run.model}, {len(run)} requests")
        t0 = time.perf_counter()
        sim, desc = replay(run)
        print(f"  (a) defaults: {desc} [{time.perf_counter() - t0:.1f} s]")
        default_errs[run.name] = per_metric(table(run, sim, "(a) defaults"))
        decode_steps(run)
        serial, _ = replay(run, serial_host=True)
        serial_errs[run.name] = per_metric(signed(run, serial))
        print("  (a) what-if, host work not overlapped (serial_host): mean err "
              + ", ".join(f"{m.upper()} {serial_errs[run.name][m][0]:+.1%}" for m in METRICS))
        serial_errs[run.name] = {m: [abs(e) for e in v] for m, v in serial_errs[run.name].items()}
        if args.defaults_only or len(runs) < 2:
            continue
        others = same_device_runs([r for r in runs if r is not run], device_of(run))
        if not others:
            print(f"  (b) no other run on {device_of(run)} to fit on: the defaults stand (efficiencies are per device)")
            loo_errs[run.name] = default_errs[run.name]
            continue
        t0 = time.perf_counter()
        cal = fit_runs(others)
        sim, desc = replay(run, calibration=cal)
        print(f"  (b) {cal.describe()} [{time.perf_counter() - t0:.1f} s]")
        loo_errs[run.name] = per_metric(table(run, sim, "(b) leave-one-out"))

    def summary(errs: dict[str, dict]) -> tuple[float, dict[str, float]]:
        by = {m: float(np.median([e for r in errs.values() for e in r[m]])) for m in METRICS}
        allv = float(np.median([e for r in errs.values() for m in METRICS for e in r[m]]))
        return allv, by

    print()
    a, by = summary(default_errs)
    print(f"defaults median |err| {a:.1%} (TTFT {by['ttft']:.1%}, TPOT {by['tpot']:.1%}, E2E {by['e2e']:.1%})")
    a, by = summary(serial_errs)
    print(f"what-if serial host median |err| {a:.1%} (TTFT {by['ttft']:.1%}, TPOT {by['tpot']:.1%}, E2E {by['e2e']:.1%})")
    if loo_errs:
        a, by = summary(loo_errs)
        print(f"leave-one-out median |err| {a * 100:.1f} % (TTFT {by['ttft'] * 100:.1f} %, "
              f"TPOT {by['tpot'] * 100:.1f} %, E2E {by['e2e'] * 100:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
