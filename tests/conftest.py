"""Shared test helpers: paths to the repo, its scenarios and the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
SHARED = REPO.parent / "shared"
TRACES = SHARED / "data" / "traces"


@pytest.fixture
def quickstart() -> Path:
    return SCENARIOS / "quickstart.yaml"


def need_shared() -> None:
    if not TRACES.exists():
        pytest.skip(f"shared data not found at {SHARED}")


@pytest.fixture(autouse=True, scope="session")
def _no_user_profiles(tmp_path_factory):
    """The suite sees only the shipped profiles and calibrations (and what a test adds): a developer's own
    ~/.local/share/vidur or $VIDUR_PROFILE_PATH must not change which estimator `auto` picks."""
    import os

    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg")))
    for var in ("VIDUR_PROFILE_PATH", "VIDUR_CALIBRATION_PATH"):
        if var in os.environ:
            mp.delenv(var)
    yield
    mp.undo()
