"""The package map and its layering: ARCHITECTURE.md names every package, and the import contracts in
pyproject.toml (import-linter) hold."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "vidur"


def _packages() -> list[str]:
    """Every package (directory with __init__.py) and top-level module under vidur/, as a path."""
    out = [str(p.parent.relative_to(REPO)) + "/" for p in sorted(PKG.rglob("__init__.py")) if p.parent != PKG]
    out += [str(p.relative_to(REPO)) for p in sorted(PKG.glob("*.py")) if p.name != "__init__.py"]
    return out


def test_architecture_names_every_package():
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [p for p in _packages() if f"`{p}" not in text]
    assert not missing, f"ARCHITECTURE.md does not describe {missing}; add them to its package table"


def test_the_layers_contract_covers_every_top_level_package():
    """A new top-level package must take a place in the layering (pyproject.toml, [tool.importlinter])."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    top = {f"vidur.{Path(p).stem if p.endswith('.py') else p.split('/')[1]}" for p in _packages()}
    assert top - named == set(), f"add {sorted(top - named)} to the layers contract in pyproject.toml"


def test_import_contracts_hold():
    """What CI enforces: no package imports one above it, and the core never imports a built-in estimator.
    In a subprocess: import-linter reconfigures logging in the process that runs it."""
    import os
    import subprocess
    import sys

    pytest.importorskip("importlinter")
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "2 kept, 0 broken" in res.stdout
