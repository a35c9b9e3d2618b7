"""Calibrating the roofline estimator on a measured profile of the same device.

One profiled model teaches the roofline how a GPU behaves: the achieved
fraction of peak FLOP/s and bandwidth for GEMMs, for elementwise kernels and
for attention, and the per-kernel launch floor. Those efficiencies then
price every other model on that GPU. On the A40 measurements in
``vidur-profiles`` (a GPU the default efficiencies were not tuned on),
calibrating on any one model cut the summed-layer error on the other five
from ~10 % to 6.3-7.5 % (``benchmarks/bench_roofline_accuracy.py
--cross-model``).

- token-level operators: :func:`fit_token_efficiencies` (compute,
  memory and elementwise efficiencies, launch overhead);
- attention: prefill FLOP/s efficiency and decode bandwidth efficiency, each
  with a fixed per-call overhead, by a grid search minimising the mean
  relative error over the profile's attention measurements.

:func:`calibrated_config` is memoised per (profile files, base config), so
repeated simulations (a capacity search) calibrate once per process. The
estimator class is passed in (``cls``: :class:`vidur.estimate.roofline.
RooflineEstimator` or a subclass), so fitting never imports an estimator.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Iterable

import attrs
import numpy as np

from vidur.errors import VidurError
from vidur.hardware.spec import DeviceSpec, NodeSpec
from vidur.model.cost import OpCost, embed_ops, layer_ops
from vidur.model.spec import ModelSpec
from vidur.store.profiles import MLP_OPS, Profile, list_profiles, load_profile

#: profile operator names -> the roofline's (Vidur's) operator names
ROOFLINE_NAMES = {ours: theirs for theirs, ours in MLP_OPS.items()} | {"kv_cache_write": "attn_kv_cache_save"}

_EFFICIENCY_GRID = np.linspace(0.05, 1.0, 96)
_OVERHEAD_GRID = np.linspace(0.0, 40e-6, 41)  # fixed seconds per attention call beyond the launch


@attrs.frozen
class OpMeasurement:
    """One measured token-level operator time, for :meth:`RooflineEstimator.calibrate`.

    ``op`` uses the operator names of :func:`vidur.model.cost.layer_ops`
    (Vidur's profile names: ``attn_pre_proj``, ``mlp_up_proj``, ``add`` ...);
    ``seconds`` is one call of the operator.
    """

    op: str
    num_tokens: int
    tp: int
    seconds: float


def fit_token_efficiencies(
    measurements: Iterable[OpMeasurement],
    model: ModelSpec,
    device: DeviceSpec,
    base,
    rounds: int = 4,
    per_op_weight: float = 0.25,
):
    """Fit compute, memory and elementwise efficiencies and the launch overhead to measured op times.

    Uses the token-level measurements whose ``op`` this estimator knows
    (others are ignored). The objective is the mean absolute percentage
    error of the summed time of the measured operators per (tp, tokens)
    shape — what a simulation feels — plus ``per_op_weight`` × the
    per-operator MAPE, so no single operator drifts far. Minimised by
    coordinate descent on grids; other fields come from ``base``.
    """
    rows = []
    groups: dict[tuple[int, int], int] = {}
    tables: dict[int, dict[str, OpCost]] = {}
    for m in measurements:
        if m.seconds <= 0 or m.num_tokens <= 0:
            continue
        ops = tables.get(m.tp)
        if ops is None:
            ops = tables[m.tp] = {op.name: op for op in layer_ops(model, m.tp) + embed_ops(model, m.tp)}
        op = ops.get(m.op)
        if op is None or op.kind not in ("gemm", "elementwise"):
            continue
        flops, nbytes = op.evaluate({"one": 1, "tokens": m.num_tokens})
        group = groups.setdefault((m.tp, m.num_tokens), len(groups))
        rows.append(
            (op.kind == "gemm", flops / device.peak_flops, nbytes / device.memory_bandwidth, m.seconds,
             group, op.count)
        )
    if not rows:
        raise VidurError("roofline calibration got no usable token-level measurements; check the operator names")
    is_gemm, f_s, m_s, meas, group, count = (np.array(col) for col in zip(*rows))
    group = group.astype(int)
    meas_sum = np.bincount(group, weights=count * meas)

    def error(ec, em, ee, launch):
        mem = np.where(is_gemm, m_s / em, m_s / ee)
        pred = np.maximum(f_s / ec, mem) + launch
        pred_sum = np.bincount(group, weights=count * pred, minlength=len(meas_sum))
        summed = np.mean(np.abs(pred_sum - meas_sum) / meas_sum)
        per_op = np.mean(np.abs(pred - meas) / meas)
        return float(summed + per_op_weight * per_op)

    params = [
        base.compute_efficiency,
        base.memory_efficiency,
        base.elementwise_efficiency,
        base.resolved("launch_overhead_s"),
    ]
    grids = [
        np.linspace(0.2, 1.0, 81),
        np.linspace(0.2, 1.0, 81),
        np.linspace(0.05, 1.0, 96),
        np.linspace(0.0, 20e-6, 81),
    ]
    for _ in range(rounds):
        for i, grid in enumerate(grids):
            errs = []
            for v in grid:
                trial = list(params)
                trial[i] = float(v)
                errs.append(error(*trial))
            params[i] = float(grid[int(np.argmin(errs))])
    return attrs.evolve(
        base,
        compute_efficiency=round(params[0], 4),
        memory_efficiency=round(params[1], 4),
        elementwise_efficiency=round(params[2], 4),
        launch_overhead_s=params[3],
    )


def load_vidur_mlp_csv(path: str | Path, statistic: str = "median") -> list[OpMeasurement]:
    """Read a Vidur ``mlp.csv`` profile (times in ms) as :class:`OpMeasurement` records.

    Each ``time_stats.<op>.<statistic>`` column becomes one measurement per
    row; ``num_tokens`` and ``num_tensor_parallel_workers`` give the shape.
    """
    path = Path(path)
    out: list[OpMeasurement] = []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            suffix = f".{statistic}"
            columns = [c for c in reader.fieldnames or () if c.startswith("time_stats.") and c.endswith(suffix)]
            if not columns or "num_tokens" not in (reader.fieldnames or ()):
                raise VidurError(f"{path} is not a Vidur mlp.csv profile (no time_stats.*{suffix} / num_tokens columns)")
            for row in reader:
                n = int(row["num_tokens"])
                tp = int(row.get("num_tensor_parallel_workers") or 1)
                for col in columns:
                    if row[col]:
                        op = col[len("time_stats.") : -len(suffix)]
                        out.append(OpMeasurement(op, n, tp, float(row[col]) * 1e-3))
    except OSError as exc:
        raise VidurError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    return out


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


def _roofline(cls, cfg, model: ModelSpec, device: DeviceSpec, node: NodeSpec, tp: int):
    """A roofline estimator for one shard; the node grows to ``tp`` devices when smaller (a profile's shards
    are measured on one GPU each, and calibration never prices communication)."""
    if node.num_devices < tp:
        node = attrs.evolve(node, num_devices=tp)
    return cls(cfg, model, device, node, tp, 1)


def calibrate_attention(
    profile: Profile, model: ModelSpec, device: DeviceSpec, node: NodeSpec, cfg, cls
) -> tuple[object, dict]:
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
            est = _roofline(cls, attrs.evolve(cfg, **{field: 1.0, overhead: 0.0}), model, device, node, tp)
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


def _token_layer_mape(profile: Profile, model: ModelSpec, device: DeviceSpec, node: NodeSpec, cfg, cls) -> float:
    """Mean relative error of the summed token-level operators of one layer, over (tp, tokens) shapes."""
    errs = []
    for tp, data in sorted(profile.shards.items()):
        est = _roofline(cls, cfg, model, device, node, tp)
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
def _calibrated(path: str, stamp: tuple, device: DeviceSpec, node: NodeSpec, base, cls) -> tuple[object, dict]:
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
    before = _token_layer_mape(profile, model, device, node, base, cls)
    cfg = fit_token_efficiencies(meas, model, device, base)
    after = _token_layer_mape(profile, model, device, node, cfg, cls)
    cfg, attn = calibrate_attention(profile, model, device, node, cfg, cls)
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


def calibrated_config(path: str | Path, device: DeviceSpec, node: NodeSpec, base, cls) -> tuple[object, dict]:
    """``base`` (a RooflineConfig) with efficiencies and overheads fitted to the profile at ``path``, and a
    report of the fit: MAPE before/after for the summed token-level layer and each attention kind.
    Memoised per process on the profile's files (name, size, mtime) and ``base``. ``cls`` is the
    roofline estimator class whose predictions are fitted (it prices the profile's shapes)."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise VidurError(f"roofline calibrate_from: {path} is not a profile directory")
    return _calibrated(str(p), _stamp(p), device, node, attrs.evolve(base.for_device(device), calibrate_from=None), cls)


def same_device_profile(device: str, model: str) -> str | None:
    """A profile of ``device`` to calibrate the roofline on when ``model`` has none: the same model at
    another TP degree first, else the profile with the most measurements of another model."""
    found = [p for p in list_profiles() if p["device"] == device and p["tp"]]
    if not found:
        return None
    same = [p for p in found if p["model"] == model]
    pick = same[0] if same else max(found, key=lambda p: (len(p["tp"]), p["path"]))
    return str(pick["path"])
