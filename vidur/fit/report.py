"""What ``vidur fit`` does: fit a profile, save the fit beside it, and measure held-out accuracy."""

from __future__ import annotations

import time
from pathlib import Path

from vidur.errors import VidurError
from vidur.fit.curves import cache_dir, fit_profile
from vidur.fit.holdout import holdout_mape, row_holdout_mape
from vidur.store.profiles import FIT_FILE, load_profile


def fit_command(path: str | Path, *, holdout: float = 0.2, out: str | Path | None = None, seed: int = 0) -> dict:
    """What ``vidur fit`` does: load, fit, save, and measure held-out accuracy. Returns a report."""
    t0 = time.perf_counter()
    profile = load_profile(path)
    if not profile.shards:
        raise VidurError(f"profile {path} has no complete shard to fit; finish it with `vidur profile`")
    fp = fit_profile(profile, backend="sklearn")
    fit_s = time.perf_counter() - t0
    target = Path(out) if out else profile.path / FIT_FILE
    try:
        fp.save(target)
    except OSError as exc:
        target = cache_dir() / f"{profile.data_hash}.json"
        fp.save(target)
        if out:
            raise VidurError(f"cannot write {out}: {exc.strerror or exc}") from None
    report = {
        "profile": str(profile.path),
        "data_hash": profile.data_hash,
        "fitted": str(target),
        "fit_seconds": fit_s,
        "points": {t: len(d) for t, d in profile.shards.items()},
    }
    if holdout:
        t1 = time.perf_counter()
        report["holdout"] = holdout_mape(profile, holdout, seed, backend="sklearn")
        report["row_holdout"] = row_holdout_mape(profile, backend="sklearn")
        report["holdout_seconds"] = time.perf_counter() - t1
    return report
