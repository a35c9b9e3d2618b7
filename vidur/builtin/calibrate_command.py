"""Built-in sub-command ``vidur calibrate``: fit the roofline to real vLLM runs, score it on held-out runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from vidur.errors import VidurError
from vidur.hookspecs import hookimpl


def _load(text: str, args):
    """A run folder / requests.jsonl, or a ``vllm bench serve`` JSON with the engine settings from flags."""
    from vidur.validate.real_runs import load_real_run, real_run_from_bench

    p = Path(text).expanduser()
    if p.is_dir() or p.suffix == ".jsonl":
        return load_real_run(p)
    if p.suffix == ".json" and p.is_file():
        if not args.model or not args.device:
            raise VidurError(f"{text} is a `vllm bench serve` result: give --model and --device (and the engine "
                             f"settings the server ran with: --tp, --max-num-seqs, --max-num-batched-tokens)")
        kw = {"model": args.model, "tensor_parallel_size": args.tp}
        if args.max_num_seqs:
            kw["max_num_seqs"] = args.max_num_seqs
        if args.max_num_batched_tokens:
            kw["max_num_batched_tokens"] = args.max_num_batched_tokens
        meta = {"model": args.model, "device": args.device, "engine_kwargs": kw}
        if args.num_gpu_blocks:
            meta["kv_cache"] = {"num_gpu_blocks": args.num_gpu_blocks}
        return real_run_from_bench(p, meta)
    raise VidurError(f"{text}: give a real-run folder (requests.jsonl + meta.json), a requests.jsonl, or a "
                     f"`vllm bench serve --save-result --save-detailed` JSON file")


def _calibrate(args) -> int:
    from vidur.calibration.fit import DEFAULT_PARAMS, GRIDS, PRIOR_WEIGHT, abs_errors, fit_runs
    from vidur.calibration.replay import METRICS, device_of, engine_settings, replay, run_stats
    from vidur.store.calibrations import Calibration, user_calibrations_dir, write_calibration

    params = tuple(p.strip() for p in args.params.split(",")) if args.params else DEFAULT_PARAMS
    bad = [p for p in params if p not in GRIDS]
    if bad:
        raise VidurError(f"--params {','.join(bad)}: not fittable; choose from {', '.join(GRIDS)}")
    train = [_load(t, args) for t in args.runs]
    held = [_load(t, args) for t in args.holdout or ()]
    names = [r.name for r in train]
    overlap = {r.path for r in train} & {r.path for r in held}
    if overlap:
        raise VidurError(f"{', '.join(sorted(overlap))} is both fitted on and held out; never score on fitted data")
    devices = {device_of(r) for r in train}
    models = {r.model for r in train}
    tps = {engine_settings(r)["tensor_parallel_size"] for r in train}
    t0 = time.perf_counter()
    prior = PRIOR_WEIGHT if args.prior_weight is None else args.prior_weight
    if not prior >= 0:
        raise VidurError(f"--prior-weight must be >= 0 (0: no pull toward the defaults), got {args.prior_weight}")
    cal = fit_runs(train, params=params, prior_weight=prior)
    report = {"fitted_on": names, "params": cal.params, "fit_seconds": round(time.perf_counter() - t0, 1),
              "objective_on_fitted_runs": {"before": cal.objective_before, "after": cal.objective_after},
              "held_out": {}}
    for r in held:
        real = run_stats(r.ttft, r.tpot, r.e2e)
        before = abs_errors(real, replay(r)[0])
        after = abs_errors(real, replay(r, calibration=cal)[0])
        report["held_out"][r.name] = {
            m: {"before": round(float(sum(before[m]) / 4), 4), "after": round(float(sum(after[m]) / 4), 4)}
            for m in METRICS
        }
    out = None
    if not args.dry_run:
        device = devices.pop() if len(devices) == 1 else None
        if device is None:
            raise VidurError(f"the runs are on several devices ({', '.join(sorted(devices | {device_of(r) for r in train}))}); "
                             f"a calibration file is per device: fit one device at a time, or --dry-run")
        store = Calibration(
            estimator="roofline",
            device=device,
            config=cal.roofline_overrides(),
            model=models.pop() if len(models) == 1 else None,
            tp=tps.pop() if len(tps) == 1 else None,
            fitted_from=cal.fitted_from(),
        )
        model_part = (store.model or "any-model").replace("/", "--")
        out = Path(args.out) if args.out else user_calibrations_dir() / device / f"{model_part}-tp{store.tp or 'any'}.json"
        write_calibration(out, store, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          command="vidur calibrate " + " ".join(sys.argv[2:]))
        report["written"] = str(out)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"fitted on {', '.join(names)} in {report['fit_seconds']} s: {cal.describe()}")
    print(f"  objective on the fitted runs (not a held-out score): {cal.objective_before} -> {cal.objective_after}")
    if held:
        print("held-out mean |error| of mean/p50/p90/p99, defaults -> calibrated:")
        for name, row in report["held_out"].items():
            cells = ", ".join(f"{m.upper()} {v['before']:.1%} -> {v['after']:.1%}" for m, v in row.items())
            print(f"  {name}: {cells}")
    else:
        print("no --holdout runs: no held-out error to report (never score on the runs a fit used)")
    if out is not None:
        print(f"wrote {out} (runtime_estimator: auto applies it to roofline runs of this device"
              f"{', model' if store.model else ''}{', TP' if store.tp else ''})")
    return 0


@hookimpl
def vidur_register_commands(cli):
    p = cli.add_parser(
        "calibrate",
        help="fit the roofline's efficiencies to real vLLM runs; write a calibration file auto applies",
        description=(
            "Replay each RUN (a data/real-vllm folder with requests.jsonl and meta.json, or a `vllm bench serve "
            "--save-result --save-detailed` JSON with the engine settings given as flags) under the vllm_v1 "
            "engine model, fit the roofline's free parameters to its TTFT/TPOT/E2E statistics, report the "
            "error before/after on the --holdout runs only, and write a calibration file."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="runs to fit on")
    p.add_argument("--holdout", nargs="+", metavar="RUN", help="runs to score on (never fitted)")
    p.add_argument("--params", help="comma-separated fields to fit (default: memory, decode attention and compute efficiency; "
                   "comm_bandwidth too when a run has TP > 1)")
    p.add_argument("--prior-weight", type=float, metavar="W",
                   help="pull of the efficiencies toward their defaults (default 0.5; 0: an unregularised fit)")
    p.add_argument("--out", help="calibration file to write (default: the user calibration directory)")
    p.add_argument("--dry-run", action="store_true", help="fit and report; write nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    g = p.add_argument_group("engine settings for `vllm bench serve` JSON runs")
    g.add_argument("--model", help="the model the server ran (a HF id or config.json)")
    g.add_argument("--device", help="the catalog device it ran on (rtx4090, h100, ...)")
    g.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    g.add_argument("--max-num-seqs", type=int, help="vLLM --max-num-seqs")
    g.add_argument("--max-num-batched-tokens", type=int, help="vLLM --max-num-batched-tokens")
    g.add_argument("--num-gpu-blocks", type=int, help="the KV block count the server logged")
    p.set_defaults(func=_calibrate)
