"""plugins/vidur-plugin-example, installed with pip, as a user would see it.

CI installs it (``pip install -e ".[test]" ./plugins/vidur-plugin-example``,
see .ci/run); without it these tests skip and say how to install it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "plugins" / "vidur-plugin-example"

try:
    DIST = metadata.distribution("vidur-plugin-example")
except metadata.PackageNotFoundError:
    pytestmark = pytest.mark.skip(
        reason="vidur-plugin-example is not installed: pip install ./plugins/vidur-plugin-example"
    )
    DIST = None


def vidur(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``vidur`` CLI in a fresh interpreter, on this checkout's plugin source."""
    env = dict(os.environ)
    env.pop("VIDUR_DISABLE_PLUGIN_AUTOLOAD", None)
    env.pop("VIDUR_BLOCK_PLUGINS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN / "src"), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "vidur.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def test_distribution_metadata_follows_the_conventions():
    meta = DIST.metadata
    assert meta["Name"].startswith("vidur-plugin-")
    assert "Framework :: vidur" in (meta.get_all("Classifier") or [])
    eps = [ep for ep in DIST.entry_points if ep.group == "vidur"]
    assert [(ep.name, ep.value) for ep in eps] == [("example", "vidur_plugin_example")]
    assert any(req.startswith("vidur-sim") for req in (meta.get_all("Requires-Dist") or []))


def test_vidur_plugins_lists_it():
    out = vidur("plugins")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    head = f"example  [vidur-plugin-example {DIST.version}]"
    assert head in lines
    block = lines[lines.index(head) + 1: lines.index(head) + 3]
    assert sorted(line.split() for line in block) == [["global_scheduler", "kv_aware"], ["replica_scheduler", "srpf"]]


def test_vidur_run_uses_srpf():
    cfg = vidur("run", "scenarios/quickstart.yaml", "--scheduler", "srpf", "--print-config")
    assert cfg.returncode == 0, cfg.stderr
    assert "replica_scheduler:\n  name: srpf\n" in cfg.stdout and "max_wait:" in cfg.stdout
    run = vidur("run", "scenarios/quickstart.yaml", "--scheduler", "srpf", "--no-output", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "requests 2,000/2,000 completed" in run.stdout


def test_vidur_run_with_both_policies_on_several_replicas():
    run = vidur("run", "scenarios/multi-replica.yaml", "--scheduler", "srpf", "--global-scheduler", "kv_aware",
                "-s", "replica_scheduler.max_wait", "5", "-s", "workload.num_requests", "400",
                "--no-output", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "requests 400/400 completed" in run.stdout


def test_a_bad_option_is_one_line_naming_the_key():
    run = vidur("run", "scenarios/quickstart.yaml", "--scheduler", "srpf", "-s", "replica_scheduler.max_wiat", "1",
                "--no-output")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "max_wiat" in run.stderr and "max_wait" in run.stderr


def test_the_plugins_own_test_suite_passes():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN / "src"), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
                         capture_output=True, text=True, cwd=PLUGIN, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
