"""Re-price a saved `vidur validate` run with the current code and a profile: errors before and after.

    python benchmarks/rescore_validation.py RUN/iterations.csv --model meta-llama/Meta-Llama-3-8B \
        --device h200 --profile profiles/h200/meta-llama/Meta-Llama-3-8B [--engine-mode cuda_graphs] \
        [--cuda-graph-max-batch 64]

RUN is the --out directory of `vidur validate` (benchmarks/gpu/validate_gpu.sh keeps it in
validate.tar.gz). "before" is what the run itself predicted; "after" what this checkout predicts for
the same batches. Use it to check a change to profiling or fitting against real GPU measurements
without a GPU. Set --engine-mode and --cuda-graph-max-batch as the run's notes say.
"""

from __future__ import annotations

import argparse
import sys

from vidur.errors import VidurError
from vidur.estimate.profile_estimator import ProfileConfig, ProfileEstimator
from vidur.resolve.device import resolve_device
from vidur.hardware.catalog import default_node
from vidur.model.catalog import load_model
from vidur.validate.rescore import format_rescore, read_iterations_csv, rescore


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("iterations")
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", required=True, help="device SKU of the run, e.g. h200")
    ap.add_argument("--profile", help="profile directory (default: the one found for model and device)")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--engine-mode", default="cuda_graphs", choices=("cuda_graphs", "eager"))
    ap.add_argument("--cuda-graph-max-batch", type=int, default=256)
    args = ap.parse_args(argv)
    try:
        it = read_iterations_csv(args.iterations)
        model = load_model(args.model)
        cfg = ProfileConfig(
            profile=args.profile, engine_mode=args.engine_mode, cuda_graph_max_batch=args.cuda_graph_max_batch,
            warn_extrapolation=False,
        )
        est = ProfileEstimator(cfg, model, resolve_device(args.device).spec, default_node(args.device), args.tp, 1)
        res = rescore(it, est)
    except VidurError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(it['measured_ms'])} iterations of {args.iterations}; after = {est.describe()}")
    print(format_rescore(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
