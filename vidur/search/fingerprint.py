"""What a search result depends on beyond its scenario: the pricing data and the code.

A resumed search reuses a configuration's result only when nothing that
decides it has changed (:func:`vidur.search.driver.canonical_key`). The
scenario says *what* is simulated; :func:`pricing_fingerprint` adds *how it
is priced*: the estimator that ``auto`` (or the scenario) resolves to, its
configuration (for a wrapping estimator, also the estimator it wraps, as resolved, with
its configuration), and the bytes of the data it reads (profile directory,
calibration file, device file), so a re-profiled or re-fitted profile, or a
new calibration, invalidates the results it priced. :func:`code_version`
covers the simulator itself (version and a digest of its source).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import vidur


def _digest_path(path: str | None) -> str | None:
    """SHA-256 (16 hex digits) of a file, or of every file under a directory (names and bytes)."""
    if not path:
        return None
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        h.update(p.read_bytes())
    elif p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            h.update(f.read_bytes())
    else:
        return f"missing:{path}"
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<version>+<digest of the vidur package's Python source>``: any change to the simulator changes it."""
    root = Path(vidur.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(f.read_bytes())
    return f"{vidur.__version__}+{h.hexdigest()[:12]}"


def pricing_fingerprint(scenario, host=None) -> dict:
    """The resolved estimator, its configuration, and digests of the files it prices from."""
    from vidur.config import unstructure
    from vidur.engine.simulation import Simulation
    from vidur.errors import VidurError
    from vidur.estimate.wrap import WrappingEstimator

    try:
        sim = Simulation(scenario, host)
    except VidurError as exc:  # cannot run (the search reports why): keyed by the reason
        return {"cannot_run": str(exc), "code": code_version()}
    prov = sim.provenance

    def config_of(est):
        cfg = getattr(est, "config", None)
        return unstructure(cfg) if cfg is not None else None

    # a wrapping estimator's own config names its inner as written (``auto``): add what each
    # inner one resolved to and its resolved config (auto's choice, calibration, engine mode)
    wraps, est = [], sim.estimator
    while isinstance(est, WrappingEstimator):
        est = est.inner
        wraps.append({"estimator": est.name, "estimator_config": config_of(est)})
    return {
        "estimator": prov.estimator,
        "estimator_config": config_of(sim.estimator),
        "wraps": wraps or None,
        "source": _digest_path(prov.source),
        "calibration": _digest_path(prov.calibration),
        "device_file": _digest_path(scenario.cluster.device_file),
        "code": code_version(),
    }
