"""Calibration files: fitted values of one estimator's ``Config`` for a device (and optionally a
model, TP degree and engine mode), with where they came from.

A calibration file is JSON::

    {"format": "vidur-calibration/1",
     "estimator": "roofline",              # the registered estimator whose Config it sets
     "device": "h100",                     # required
     "model": "meta-llama/Meta-Llama-3-8B",  # optional: null or absent = any model
     "tp": 1,                              # optional: any TP degree when absent
     "engine_mode": "cuda_graphs",         # optional: any engine mode when absent
     "config": {"compute_efficiency": 0.71, "cpu_base_s": 0.0021},
     "fitted_from": "vLLM 0.11 runs of ... (what the values were fitted on)",
     "created": "2026-12-03T20:00:00+0000", "command": "vidur calibrate ..."}

Producers (a fit from real vLLM runs, ``vidur calibrate``) write one with :func:`write_calibration`
into :func:`user_calibrations_dir`; ``runtime_estimator: auto`` applies the most specific file
that matches the estimator it picks (:func:`find_calibration`) and names it in the run's
provenance. Files are searched under ``$VIDUR_CALIBRATION_PATH`` (``os.pathsep``-separated), the
user's calibration directory, then the calibrations shipped in ``vidur/data/calibrations``; never
the working directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

from vidur.errors import VidurError

FORMAT = "vidur-calibration/1"
CALIBRATION_PATH_ENV = "VIDUR_CALIBRATION_PATH"
#: calibrations shipped with vidur (package data)
SHIPPED_CALIBRATIONS = Path(__file__).resolve().parent.parent / "data" / "calibrations"
SCOPE = ("model", "tp", "engine_mode")


@attrs.frozen
class Calibration:
    """One calibration file: the estimator and scope it applies to and the Config values it sets."""

    estimator: str
    device: str
    config: dict = attrs.field(factory=dict)
    model: str | None = None
    tp: int | None = None
    engine_mode: str | None = None
    fitted_from: str = ""
    path: str | None = None  # where it was read from

    def matches(self, estimator: str, device: str, model: str, tp: int, engine_mode: str | None) -> bool:
        """Does this file apply to the estimator ``estimator`` pricing (device, model, tp, engine mode)?"""
        return (
            self.estimator == estimator
            and self.device == device
            and self.model in (None, model)
            and self.tp in (None, int(tp))
            and (self.engine_mode is None or engine_mode is None or self.engine_mode == engine_mode)
        )

    def specificity(self) -> int:
        """How many optional scope fields it pins (more specific files win)."""
        return sum(getattr(self, k) is not None for k in SCOPE)

    def to_json(self) -> dict:
        d = {"format": FORMAT, **attrs.asdict(self)}
        d.pop("path")
        return d


def user_calibrations_dir() -> Path:
    """Where producers write calibrations by default: the first ``$VIDUR_CALIBRATION_PATH`` entry,
    else ``$XDG_DATA_HOME/vidur/calibrations`` (``~/.local/share/vidur/calibrations``)."""
    env = [p for p in os.environ.get(CALIBRATION_PATH_ENV, "").split(os.pathsep) if p.strip()]
    if env:
        return Path(env[0]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "vidur" / "calibrations"


def calibration_roots() -> list[Path]:
    """Directories searched for calibration files, in order (independent of the working directory)."""
    roots = [Path(p).expanduser() for p in os.environ.get(CALIBRATION_PATH_ENV, "").split(os.pathsep) if p.strip()]
    roots += [user_calibrations_dir(), SHIPPED_CALIBRATIONS]
    out: list[Path] = []
    for r in roots:
        if r.is_dir() and r.resolve() not in [o.resolve() for o in out]:
            out.append(r)
    return out


def read_calibration(path: str | Path) -> Calibration:
    """Parse one calibration file (a one-line error when it is not one)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VidurError(f"cannot read calibration file {p}: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise VidurError(f"{p} is not a {FORMAT} calibration file")
    for key in ("estimator", "device"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise VidurError(f"{p}: '{key}' must name the {key} it calibrates")
    if not isinstance(d.get("config", {}), dict):
        raise VidurError(f"{p}: 'config' must be a mapping of the estimator's Config fields")
    tp = d.get("tp")
    if tp is not None and (not isinstance(tp, int) or isinstance(tp, bool) or tp < 1):
        raise VidurError(f"{p}: 'tp' must be a positive integer or absent, got {tp!r}")
    known = {"format", "estimator", "device", "config", "fitted_from", "created", "command", *SCOPE}
    extra = sorted(set(d) - known)
    return Calibration(
        estimator=d["estimator"],
        device=d["device"],
        config=dict(d.get("config") or {}),
        model=d.get("model"),
        tp=tp,
        engine_mode=d.get("engine_mode"),
        fitted_from=str(d.get("fitted_from", "")) + (f" (extra keys: {', '.join(extra)})" if extra else ""),
        path=str(p),
    )


def write_calibration(path: str | Path, cal: Calibration, **extra: Any) -> Path:
    """Write ``cal`` to ``path`` atomically (``extra``: e.g. ``created``, ``command``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({**cal.to_json(), **extra}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def list_calibrations() -> list[Calibration]:
    """Every readable calibration file under the roots (unreadable ones are skipped here)."""
    out = []
    for root in calibration_roots():
        for f in sorted(root.rglob("*.json")):
            try:
                out.append(read_calibration(f))
            except VidurError:
                continue
    return out


def find_calibration(estimator: str, device: str, model: str, tp: int, engine_mode: str | None = None) -> Calibration | None:
    """The most specific calibration of ``estimator`` for (device, model, tp, engine mode), or None.
    Ties go to the earlier root, then the file name."""
    found = [c for c in list_calibrations() if c.matches(estimator, device, model, tp, engine_mode)]
    if not found:
        return None
    best = max(c.specificity() for c in found)
    return next(c for c in found if c.specificity() == best)
