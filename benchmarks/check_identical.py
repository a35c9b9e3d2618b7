"""Check that two checkouts of vidur write identical run directories.

Runs each scenario with ``python -m vidur.cli run`` under both source trees
(``PYTHONPATH``) and compares ``summary.json`` and the ``requests`` and
``batches`` tables (``.parquet`` or ``.csv``, whichever the run wrote) byte
for byte. Used to show that a change keeps outputs as they were (for
example prefix caching off vs. the main branch). Against a checkout older
than Parquet tables, pass ``-s metrics.table_format=csv``.

    python benchmarks/check_identical.py --base /path/to/other/checkout [--requests N] [scenario ...]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT = ["quickstart.yaml", "vllm.yaml", "sarathi.yaml", "orca.yaml", "faster_transformer.yaml", "lightllm.yaml",
           "multi-replica.yaml", "tp2-pp2.yaml"]
FILES = ("summary.json", "requests", "batches")  # the tables: .parquet or .csv


def _file(d: Path, name: str) -> Path:
    for p in (d / name, d / f"{name}.parquet", d / f"{name}.csv"):
        if p.is_file():
            return p
    return d / name


def run(tree: Path, scenario: Path, out: Path, requests: int, extra: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "vidur.cli", "run", str(scenario), "--out", str(out), "--no-progress",
           "-s", "workload.num_requests", str(requests), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=tree)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=Path, help="the other checkout (its root)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("-s", dest="settings", action="append", default=[], help="KEY=VALUE for this checkout only")
    ap.add_argument("scenarios", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    extra = [x for kv in args.settings for x in ("-s", *kv.split("=", 1))]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.scenarios):
            # inside the temporary directory whatever the name (``../benchmarks/bench_sim.yaml`` too)
            a, b = Path(tmp) / f"{i}-{Path(name).name}-a", Path(tmp) / f"{i}-{Path(name).name}-b"
            run(REPO, REPO / "scenarios" / name, a, args.requests, extra)
            run(args.base.resolve(), args.base.resolve() / "scenarios" / name, b, args.requests, [])
            diff = [f for f in FILES if not (_file(a, f).name == _file(b, f).name and _file(a, f).is_file()
                                             and filecmp.cmp(_file(a, f), _file(b, f), shallow=False))]
            print(f"{name}: {'identical' if not diff else 'DIFFERENT: ' + ', '.join(diff)}")
            bad += bool(diff)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
