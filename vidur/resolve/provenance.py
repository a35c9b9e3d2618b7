"""The provenance record: which estimator prices a run, from which data, and why.

One record per resolution (:func:`vidur.resolve.estimator.resolve_estimator`). ``vidur run``
prints :meth:`Provenance.header` under its title and stores :meth:`Provenance.to_dict` as
``summary.json``'s ``provenance``; ``vidur search`` stores it per configuration (results
columns ``estimator``, ``estimator_source``); ``vidur estimate`` and ``vidur validate`` print and
store it in their reports.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Provenance:
    """Where a run's timings come from.

    - ``estimator``: the registered estimator that prices the run; ``requested``: what the
      scenario asked for (``auto`` or a name);
    - ``reason``: why this estimator, in a few words;
    - ``source``: the profile directory or file its numbers come from (None: its own defaults),
      and ``source_root``: where that was found (``shipped with vidur``, ``user profiles``,
      ``$VIDUR_PROFILE_PATH``, ``given path``);
    - ``calibration``: a calibration file applied on top (found by ``auto``, or named by the estimator's ``calibration`` option), with ``fitted_from``;
    - ``skipped``: what ``auto`` passed over, each with why;
    - ``device`` and ``device_source`` (catalog, a plugin, a device file, a profile);
      ``engine_mode`` and ``engine_mode_reason`` when the run set one;
    - ``wraps``: for a wrapping estimator (``estimator``), the estimator it wraps; the other
      fields then describe that inner one.
    """

    estimator: str
    requested: str
    reason: str
    source: str | None = None
    source_root: str | None = None
    calibration: str | None = None
    fitted_from: str | None = None
    skipped: tuple[str, ...] = ()
    device: str = ""
    device_source: str = ""
    engine_mode: str | None = None
    engine_mode_reason: str | None = None
    wraps: str | None = None

    def header(self) -> str:
        """One line for a run's header: ``estimator profile (auto: ...) from <path> [shipped with vidur]``."""
        how = self.reason if self.requested == "auto" else f"requested; {self.reason}"
        line = f"estimator {self.estimator} ({'auto: ' if self.requested == 'auto' else ''}{how})"
        if self.source:
            line += f" from {self.source}" + (f" [{self.source_root}]" if self.source_root else "")
        if self.calibration:
            line += f", calibration {self.calibration}"
        if self.engine_mode:
            line += f", engine mode {self.engine_mode}" + (f" ({self.engine_mode_reason})" if self.engine_mode_reason else "")
        return line

    def notes(self) -> list[str]:
        """Further lines worth printing: what ``auto`` skipped and why, and where the device came from."""
        out = [f"auto skipped {s}" for s in self.skipped]
        if self.device_source and self.device_source != "catalog":
            out.append(f"device {self.device}: {self.device_source}")
        return out

    def to_dict(self) -> dict:
        """Plain JSON: every field (``skipped`` as a list)."""
        d = attrs.asdict(self)
        d["skipped"] = list(self.skipped)
        return d
