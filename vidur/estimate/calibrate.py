"""Calibrating the roofline estimator on a measured profile of the same device.

One profiled model teaches the roofline how a GPU behaves: the achieved
fraction of peak FLOP/s and bandwidth for GEMMs, for elementwise kernels and
for attention, and the per-kernel launch floor. Those efficiencies then
price every other model on that GPU. On the A40 measurements in
``vidur-profiles`` (a GPU the default efficiencies were not tuned on),
calibrating on any one model cut the summed-layer error on the other five
from ~10 % to 6.3-7.5 % (``benchmarks/bench_roofline_accuracy.py
--cross-model``).

- token-level operators: :meth:`RooflineEstimator.calibrate` (compute,
  memory and elementwise efficiencies, launch overhead);
- attention: prefill FLOP/s efficiency and decode bandwidth efficiency, each
  with a fixed per-call overhead, by a grid search minimising the mean
  relative error over the profile's attention measurements.

:func:`calibrated_config` is memoised per (profile files, base config), so
repeated simulations (a capacity search) calibrate once per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.estimate.profiles import Profile, list_profiles, load_profile
from vidur.estimate.vidur_import import MLP_OPS
from vidur.hardware.spec import DeviceSpec, NodeSpec
from vidur.model.spec import ModelSpec

#: profile operator names -> the roofline's (Vidur's) operator names
ROOFLINE_NAMES = {ours: theirs for theirs, ours in MLP_OPS.items()} | {"kv_cache_write": "attn_kv_cache_save"}

_EFFICIENCY_GRID = np.linspace(0.05, 1.0, 96)
_OVERHEAD_GRID = np.linspace(0.0, 40e-6, 41)  # fixed seconds per attention call beyond the launch


def profile_model(profile: Profile) -> ModelSpec:
    """The model a profile measured (its recorded spec; the catalog's when the spec is missing)."""
    if profile.model_spec:
        try:
            return ModelSpec(**profile.model_spec)
        except TypeError:
            pass
    from vidur.model.catalog import load_model

    return load_model(profile.model)


def token_measurements(profile: Profile) -> list:
    """The profile's token-level operator times as the roofline's :class:`OpMeasurement` records."""
    from vidur.estimate.roofline import OpMeasurement

    out = []
    for tp, data in sorted(profile.shards.items()):
        for op, name in ROOFLINE_NAMES.items():
            cols = data.select(op)
            for n, ms in zip(cols["num_tokens"], cols["median_ms"]):
                out.append(OpMeasurement(name, int(n), tp, float(ms) * 1e-3))
    return out


def _attention_rows(profile: Profile, op: str) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(tp, batch, chunk, context, seconds) per shard for ``attn_prefill`` / ``attn_decode``."""
    rows = []
    for tp, data in sorted(profile.shards.items()):
        c = data.select(op)
        if len(c["op"]):
            rows.append((tp, np.maximum(c["batch"], 1), c["num_tokens"], c["context"], c["median_ms"] * 1e-3))
    return rows


def _roofline(cfg, model: ModelSpec, device: DeviceSpec, node: NodeSpec, tp: int):
    """A roofline estimator for one shard; the node grows to ``tp`` devices when smaller (a profile's shards
    are measured on one GPU each, and calibration never prices communication)."""
    from vidur.estimate.roofline import RooflineEstimator

    if node.num_devices < tp:
        node = attrs.evolve(node, num_devices=tp)
    return RooflineEstimator(cfg, model, device, node, tp, 1)


def calibrate_attention(profile: Profile, model: ModelSpec, device: DeviceSpec, node: NodeSpec, cfg) -> tuple[object, dict]:
    """``cfg`` with prefill/decode attention efficiencies and per-call overheads fitted to the profile;
    and the MAPEs before/after."""
    report: dict[str, dict] = {}
    out = cfg
    kinds = (
        ("attn_prefill", "prefill_attention_efficiency", "prefill_attention_overhead_s"),
        ("attn_decode", "decode_attention_efficiency", "decode_attention_overhead_s"),
    )
    for op, field, overhead in kinds:
        shards = _attention_rows(profile, op)
        if not shards:
            continue
        parts = []  # per shard: compute- and memory-bound seconds (this efficiency at 1), launch, measured
        for tp, b, q, ctx, t in shards:
            est = _roofline(attrs.evolve(cfg, **{field: 1.0, overhead: 0.0}), model, device, node, tp)
            c, m = est.attention_bounds(op, b, q, ctx)
            parts.append((c, m, est.attention_fixed(op), t))

        def error(eff: float, extra: float) -> float:
            errs = []
            for c, m, launch, t in parts:
                pred = (np.maximum(c / eff, m) if op == "attn_prefill" else np.maximum(c, m / eff)) + launch + extra
                errs.append(np.abs(pred - t) / t)
            return float(np.mean(np.concatenate(errs)))

        before = error(getattr(cfg, field), getattr(cfg, overhead))
        best = min((error(float(e), float(x)), float(e), float(x)) for e in _EFFICIENCY_GRID for x in _OVERHEAD_GRID)
        after, eff, extra = best
        out = attrs.evolve(out, **{field: round(eff, 4), overhead: extra})
        report[op] = {"mape_before": before * 100, "mape_after": after * 100, field: round(eff, 4), overhead: extra}
    return out, report


def _token_layer_mape(profile: Profile, model: ModelSpec, device: DeviceSpec, node: NodeSpec, cfg) -> float:
    """Mean relative error of the summed token-level operators of one layer, over (tp, tokens) shapes."""
    errs = []
    for tp, data in sorted(profile.shards.items()):
        est = _roofline(cfg, model, device, node, tp)
        sums: dict[int, list[float]] = {}
        for op, name in ROOFLINE_NAMES.items():
            if op == "embed":
                continue
            cols = data.select(op)
            k = 2 if op == "add" else 1
            for n, ms in zip(cols["num_tokens"], cols["median_ms"]):
                s = sums.setdefault(int(n), [0.0, 0.0])
                s[0] += k * float(ms) * 1e-3
                s[1] += k * est.token_op_time(name, int(n))
        errs += [abs(p - m) / m for m, p in sums.values() if m > 0]
    return float(np.mean(errs)) * 100 if errs else float("nan")


@functools.lru_cache(maxsize=32)
def _calibrated(path: str, stamp: tuple, device: DeviceSpec, node: NodeSpec, base) -> tuple[object, dict]:
    from vidur.estimate.roofline import RooflineEstimator

    profile = load_profile(path)
    if profile.device != device.name:
        raise VidurError(
            f"profile {path} was measured on {profile.device!r}, not {device.name!r}; "
            f"calibrate the roofline on a profile of the same device"
        )
    model = profile_model(profile)
    meas = token_measurements(profile)
    if not meas:
        raise VidurError(f"profile {path} has no token-level measurements to calibrate the roofline on")
    before = _token_layer_mape(profile, model, device, node, base)
    cfg = RooflineEstimator.calibrate(meas, model, device, base)
    after = _token_layer_mape(profile, model, device, node, cfg)
    cfg, attn = calibrate_attention(profile, model, device, node, cfg)
    report = {
        "profile": path,
        "model": model.name,
        "device": profile.device,
        "token_layer": {"mape_before": before, "mape_after": after},
        **attn,
    }
    return cfg, report


def _stamp(path: Path) -> tuple:
    """(name, size, mtime) of the profile's files: the calibration cache key (no need to re-read the data)."""
    try:
        return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))
    except OSError as exc:
        raise VidurError(f"cannot read profile {path}: {exc.strerror or exc}") from None


def calibrated_config(path: str | Path, device: DeviceSpec, node: NodeSpec, base) -> tuple[object, dict]:
    """``base`` (a RooflineConfig) with efficiencies and overheads fitted to the profile at ``path``, and a
    report of the fit: MAPE before/after for the summed token-level layer and each attention kind.
    Memoised per process on the profile's files (name, size, mtime) and ``base``."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise VidurError(f"roofline calibrate_from: {path} is not a profile directory")
    return _calibrated(str(p), _stamp(p), device, node, attrs.evolve(base, calibrate_from=None))


def same_device_profile(device: str, model: str) -> str | None:
    """A profile of ``device`` to calibrate the roofline on when ``model`` has none: the same model at
    another TP degree first, else the profile with the most measurements of another model."""
    found = [p for p in list_profiles() if p["device"] == device and p["tp"]]
    if not found:
        return None
    same = [p for p in found if p["model"] == model]
    pick = same[0] if same else max(found, key=lambda p: (len(p["tp"]), p["path"]))
    return str(pick["path"])
