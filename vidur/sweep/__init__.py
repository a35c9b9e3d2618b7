"""Policy sweeps: compare replica schedulers and routers on shared request streams, with
confidence intervals over seeds and paired tests against a baseline (``vidur sweep``)."""

from vidur.sweep.driver import SweepOutcome, run_sweep
from vidur.sweep.spec import Cell, Policy, SweepSpec, Variant, WorkloadChoice, build_policies, parse_variant

__all__ = [
    "Cell",
    "Policy",
    "SweepOutcome",
    "SweepSpec",
    "Variant",
    "WorkloadChoice",
    "build_policies",
    "parse_variant",
    "run_sweep",
]
