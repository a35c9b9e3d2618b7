"""Calibration files: fitted estimator parameters for a (device, model, engine).

A calibration file is YAML::

    kind: vidur-calibration
    version: 1
    engine: vllm_v1
    device: rtxpro6000          # null: fitted on several devices
    model: meta-llama/Llama-3.1-8B   # null: fitted on several models
    estimator: roofline
    params: {memory_efficiency: 0.86, decode_attention_efficiency: 0.7, ...}
    fitted_on: [rtx4090_llama-3.1-8b, ...]
    objective_before: 0.21      # the fit's objective on its own data (not a held-out score)
    objective_after: 0.04

``params`` are :class:`~vidur.estimate.roofline.RooflineConfig` fields; a scenario
names the file as ``runtime_estimator: {name: roofline, calibration: FILE}`` or gets
one picked up by ``auto`` (see :mod:`vidur.calibration.store`).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import yaml

from vidur.errors import VidurError

KIND = "vidur-calibration"
#: the roofline fields a calibration may set
PARAMS = (
    "memory_efficiency",
    "decode_attention_efficiency",
    "compute_efficiency",
    "prefill_attention_efficiency",
    "elementwise_efficiency",
    "cpu_base_s",
    "cpu_per_seq_s",
    "launch_overhead_s",
)


@attrs.frozen
class Calibration:
    """Fitted roofline parameters and where they come from."""

    params: dict
    engine: str = "vllm_v1"
    device: str | None = None
    model: str | None = None
    fitted_on: list = attrs.Factory(list)
    objective_before: float | None = None
    objective_after: float | None = None
    path: str | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self):
        for k, v in self.params.items():
            if k not in PARAMS:
                raise VidurError(f"calibration parameter {k!r} is not one of {', '.join(PARAMS)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise VidurError(f"calibration parameter {k} must be a non-negative number, got {v!r}")

    def roofline_overrides(self) -> dict:
        """The roofline config fields this calibration sets."""
        return {k: float(v) for k, v in self.params.items()}

    def describe(self) -> str:
        """One line: what was fitted on what."""
        p = ", ".join(
            f"{k} {v * 1e3:.2g} ms" if k.endswith("_s") and k != "cpu_per_seq_s" else
            f"{k} {v * 1e6:.3g} us" if k == "cpu_per_seq_s" else f"{k} {v:.2f}"
            for k, v in self.params.items()
        )
        where = f" fitted on {', '.join(self.fitted_on)}" if self.fitted_on else ""
        return f"calibration ({self.engine}{where}): {p}"

    def to_dict(self) -> dict:
        return {
            "kind": KIND,
            "version": 1,
            "engine": self.engine,
            "device": self.device,
            "model": self.model,
            "estimator": "roofline",
            "params": {k: float(v) for k, v in self.params.items()},
            "fitted_on": list(self.fitted_on),
            "objective_before": self.objective_before,
            "objective_after": self.objective_after,
        }

    def save(self, path: str | Path) -> None:
        """Write the YAML file (whole or not at all)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(p)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; one-line errors for anything malformed."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise VidurError(f"cannot read calibration file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise VidurError(f"calibration file {path} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise VidurError(f"{path} is not a calibration file (needs 'kind: {KIND}'); write one with `vidur calibrate`")
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise VidurError(f"calibration file {path}: 'params' must be a non-empty mapping")
    if raw.get("estimator", "roofline") != "roofline":
        raise VidurError(f"calibration file {path}: only roofline calibrations are supported, got {raw.get('estimator')!r}")
    return Calibration(
        params=params,
        engine=str(raw.get("engine") or "vllm_v1"),
        device=raw.get("device"),
        model=raw.get("model"),
        fitted_on=list(raw.get("fitted_on") or []),
        objective_before=raw.get("objective_before"),
        objective_after=raw.get("objective_after"),
        path=str(p),
    )
