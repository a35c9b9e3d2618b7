"""Accuracy of the CPU fidelity check: `vidur validate scenarios/validate-tiny-cpu.yaml --device cpu`, N times.

    python benchmarks/bench_validate_cpu.py [--runs 3]

Each run prints the host's pace against the profile's (the pace probe's time now / when profiled),
the per-iteration error (median, bias) by batch kind, the simulated / real ratio of TTFT, TPOT and
E2E at p50 and of the makespan. On a shared host the real side's times move with the other
tenants' load while the simulated side keeps the profile's: compare the errors with the pace ratio
(the test suite asserts only the behaviour of the check, tests/test_validate.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from vidur.scenario import load_scenario
from vidur.validate.run import validate_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "validate-tiny-cpu.yaml"


def one_run() -> dict:
    """One validation; the figures this benchmark reports."""
    rep = validate_scenario(load_scenario(SCENARIO), device="cpu").report
    it, rq = rep["iterations"], rep["requests"]
    row = {"pace": (rep["run"]["host_pace"] or {}).get("ratio")}
    for kind in ("all", "decode_only", "mixed", "prefill_only"):
        row[f"{kind}_median"] = it[kind]["median"]
        row[f"{kind}_bias"] = it[kind]["bias"]
    for m in ("ttft", "tpot", "e2e"):
        c = rq[m]["p50"]
        row[f"{m}_p50_sim/real"] = c["sim"] / c["real"]
    mk = rep["cluster"]["makespan_s"]
    row["makespan_sim/real"] = mk["sim"] / mk["real"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    args = ap.parse_args(argv)
    rows = []
    for i in range(args.runs):
        row = one_run()
        rows.append(row)
        if args.json:
            print(json.dumps(row))
        else:
            print(
                f"run {i + 1}: pace x{row['pace']}  iteration median {100 * row['all_median']:.1f}% "
                f"bias {100 * row['all_bias']:+.1f}% (decode {100 * row['decode_only_bias']:+.1f}%)  "
                f"p50 sim/real TTFT {row['ttft_p50_sim/real']:.2f} TPOT {row['tpot_p50_sim/real']:.2f} "
                f"E2E {row['e2e_p50_sim/real']:.2f}  makespan {row['makespan_sim/real']:.3f}",
                flush=True,
            )
    if not args.json and len(rows) > 1:
        med = lambda k: statistics.median(r[k] for r in rows)
        print(f"median over {len(rows)} runs: iteration median {100 * med('all_median'):.1f}%, "
              f"bias {100 * med('all_bias'):+.1f}%, makespan sim/real {med('makespan_sim/real'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
