"""How well does the roofline estimator predict measured token-level operator times?

Compares :class:`vidur.estimate.roofline.RooflineEstimator` against the
``mlp.csv`` profiles Vidur measured on real A100, A40 and H100 GPUs
(``shared/data/vidur-profiles/compute``) and prints the mean absolute
percentage error (MAPE) per operator and device, and of the summed layer
time (the measured operators of one decoder layer, both residual adds
included). ``--calibrate`` also fits efficiencies per device with
:meth:`RooflineEstimator.calibrate` and reports their in-sample error;
``--cross-model`` calibrates on each model and prices the same device's others.

Usage: ``python benchmarks/bench_roofline_accuracy.py [--data DIR] [--min-tokens 64] [--calibrate] [--cross-model]``
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from vidur.errors import VidurError
from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
from vidur.fit.roofline import load_vidur_mlp_csv
from vidur.hardware.catalog import default_node, get_device, get_node
from vidur.model.catalog import load_model

LAYER_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
OP_COUNT = {"add": 2}


def find_data_dir(explicit: str | None) -> Path:
    """The shared data directory: --data, $VIDUR_DATA_DIR, or ../shared/data beside the checkout."""
    candidates = [explicit, os.environ.get("VIDUR_DATA_DIR")]
    root = Path(__file__).resolve().parents[1]
    candidates += [str(root.parent / "shared" / "data"), str(root / "shared" / "data")]
    for c in candidates:
        if c and (Path(c) / "vidur-profiles" / "compute").is_dir():
            return Path(c)
    raise SystemExit("cannot find shared/data/vidur-profiles/compute; pass --data DIR or set VIDUR_DATA_DIR")


def estimator(config, model, device_name: str, tp: int) -> RooflineEstimator:
    """A roofline estimator on a node large enough for ``tp``."""
    node = default_node(device_name)
    if node.num_devices < tp:
        node = get_node("pcie_8")
    return RooflineEstimator(config, model, get_device(device_name), node, tp, 1)


def evaluate(profiles, configs, min_tokens: int):
    """Per (device, op) and per device summed-layer relative errors."""
    op_err = defaultdict(list)  # (device, op) -> errors
    layer_err = defaultdict(list)  # device -> errors
    model_layer_err = defaultdict(list)  # (device, model) -> errors
    for (dev, model_name), meas in profiles.items():
        model = load_model(model_name)
        cfg = configs[dev]
        ests = {}
        by_shape = defaultdict(dict)
        for m in meas:
            by_shape[(m.num_tokens, m.tp)].setdefault(m.op, []).append(m.seconds)
        for (n, tp), ops in by_shape.items():
            if n < min_tokens:
                continue
            est = ests.get(tp)
            if est is None:
                est = ests[tp] = estimator(cfg, model, dev, tp)
            meas_sum = pred_sum = 0.0
            for op, secs in ops.items():
                t_meas = float(np.mean(secs))
                try:
                    t_pred = est.token_op_time(op, n)
                except VidurError:
                    continue
                op_err[(dev, op)].append(abs(t_pred - t_meas) / t_meas)
                if op in LAYER_OPS:
                    k = OP_COUNT.get(op, 1)
                    meas_sum += k * t_meas
                    pred_sum += k * t_pred
            if meas_sum > 0:
                e = abs(pred_sum - meas_sum) / meas_sum
                layer_err[dev].append(e)
                model_layer_err[(dev, model_name)].append(e)
    return op_err, layer_err, model_layer_err


def report(title, op_err, layer_err, model_layer_err, devices) -> None:
    """Print MAPE tables."""
    print(f"\n== {title}")
    ops = sorted({op for _, op in op_err}, key=lambda o: (o not in LAYER_OPS, o))
    print(f"{'operator':26s}" + "".join(f"{d:>10s}" for d in devices))
    for op in ops:
        cells = []
        for d in devices:
            errs = op_err.get((d, op))
            cells.append(f"{100 * np.mean(errs):9.1f}%" if errs else f"{'-':>10s}")
        print(f"{op:26s}" + "".join(cells))
    print(
        f"{'summed layer (MAPE)':26s}"
        + "".join(f"{100 * np.mean(layer_err[d]):9.1f}%" if layer_err[d] else f"{'-':>10s}" for d in devices)
    )
    print(
        f"{'summed layer (p90 err)':26s}"
        + "".join(f"{100 * np.percentile(layer_err[d], 90):9.1f}%" if layer_err[d] else f"{'-':>10s}" for d in devices)
    )
    print("summed layer MAPE per model:")
    for (d, m), errs in sorted(model_layer_err.items()):
        print(f"  {d:5s} {m:42s} {100 * np.mean(errs):6.1f}%  (n={len(errs)})")


def main(argv=None) -> int:
    """Run the comparison; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="shared data directory (holding vidur-profiles/)")
    ap.add_argument("--min-tokens", type=int, default=64, help="ignore measurements below this token count")
    ap.add_argument("--calibrate", action="store_true", help="also fit efficiencies per device and report them")
    ap.add_argument(
        "--cross-model", action="store_true",
        help="calibrate on one model's profile, report the error on the device's other models (out of sample)",
    )
    args = ap.parse_args(argv)

    compute = find_data_dir(args.data) / "vidur-profiles" / "compute"
    profiles = {}
    for path in sorted(compute.glob("*/*/*/mlp.csv")):
        dev = path.parts[-4]
        model_name = f"{path.parts[-3]}/{path.parts[-2]}"
        profiles[(dev, model_name)] = load_vidur_mlp_csv(path)
    devices = sorted({d for d, _ in profiles})
    print(f"{len(profiles)} profiles from {compute}; tokens >= {args.min_tokens}")

    default = RooflineConfig()
    print(
        f"default config: compute {default.compute_efficiency}, memory {default.memory_efficiency or 0.85} (HBM default), "
        f"elementwise {default.elementwise_efficiency}, launch {default.resolved('launch_overhead_s') * 1e6:.1f} us"
    )
    report("default efficiencies", *evaluate(profiles, {d: default for d in devices}, args.min_tokens), devices)

    if args.calibrate:
        fitted = {}
        for d in devices:
            meas = []
            for (dev, name), ms in profiles.items():
                if dev == d:
                    meas.append((load_model(name), ms))
            # fit per model on all token counts (decode batches are small), average the efficiencies
            cfgs = [RooflineEstimator.calibrate(ms, model, get_device(d)) for model, ms in meas]
            fitted[d] = RooflineConfig(
                compute_efficiency=round(float(np.mean([c.compute_efficiency for c in cfgs])), 3),
                memory_efficiency=round(float(np.mean([c.memory_efficiency for c in cfgs])), 3),
                elementwise_efficiency=round(float(np.mean([c.elementwise_efficiency for c in cfgs])), 3),
                launch_overhead_s=float(np.mean([c.launch_overhead_s for c in cfgs])),
            )
            c = fitted[d]
            print(
                f"calibrated {d}: compute {c.compute_efficiency}, memory {c.memory_efficiency}, "
                f"elementwise {c.elementwise_efficiency}, launch {c.launch_overhead_s * 1e6:.1f} us"
            )
        report("calibrated per device (in-sample)", *evaluate(profiles, fitted, args.min_tokens), devices)
    if args.cross_model:
        cross_model(profiles, devices, default, args.min_tokens)
    return 0


def cross_model(profiles, devices, default, min_tokens: int) -> None:
    """What `runtime_estimator: auto` does for an unprofiled model on a profiled GPU: calibrate on one model,
    price the others. Summed-layer MAPE over the other models, default efficiencies vs calibrated."""
    print("\n== cross-model: calibrated on one model, summed-layer MAPE on the device's other models")
    for d in devices:
        models = [m for dev, m in profiles if dev == d]
        if len(models) < 2:
            continue
        for src in models:
            cfg = RooflineEstimator.calibrate(profiles[(d, src)], load_model(src), get_device(d))
            others = {k: v for k, v in profiles.items() if k[0] == d and k[1] != src}
            _, default_err, _ = evaluate(others, {d: default}, min_tokens)
            _, calibrated_err, _ = evaluate(others, {d: cfg}, min_tokens)
            print(
                f"  {d:5s} calibrated on {src:40s} default {np.mean(default_err[d]) * 100:5.1f} %"
                f"  calibrated {np.mean(calibrated_err[d]) * 100:5.1f} %"
            )


if __name__ == "__main__":
    sys.exit(main())
