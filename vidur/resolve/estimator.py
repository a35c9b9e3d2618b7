"""Which runtime estimator prices a scenario: ``auto`` resolved, with the reason."""

from __future__ import annotations

from vidur.store.profiles import find_profile


def choose_estimator(device: str, model: str, tp: int, requested: str = "auto", profile: str | None = None) -> tuple[str, str]:
    """(estimator name, reason): ``auto`` -> ``profile`` when a profile exists, else ``roofline``."""
    if requested != "auto":
        return requested, "requested"
    if profile:
        return "profile", f"profile {profile}"
    found = find_profile(device, model, tp)
    if found is not None:
        return "profile", f"profile found at {found}"
    source = roofline_calibration_source(device, model)
    if source is not None:
        return "roofline", f"no profile for {device}/{model} tp={tp}; roofline calibrated on {source}"
    return "roofline", f"no profile for {device}/{model} tp={tp}"


def roofline_calibration_source(device: str, model: str) -> str | None:
    """For ``auto`` falling back to the roofline: a profile of the same device (another model or TP
    degree) to calibrate it on, or None (default efficiencies)."""
    from vidur.fit.roofline import same_device_profile

    return same_device_profile(str(device), str(model))
