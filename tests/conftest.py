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
