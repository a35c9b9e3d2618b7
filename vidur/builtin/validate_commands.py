"""Built-in sub-commands ``validate`` and ``compare``, registered as a plugin.

``vidur validate SCENARIO``: the scenario's scheduler drives a real PyTorch
model (the reference executor) and the simulator; errors per iteration,
request and cluster. ``vidur compare --real RESULTS --trace TRACE --scenario
SCENARIO``: timings measured on a real server (vLLM ``bench serve`` JSON)
against a simulation of the same trace.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vidur.errors import VidurError
from vidur.hookspecs import hookimpl


def _load(args):
    from vidur.scenario import load_scenario

    settings = [(k, v) for k, v in (args.set or [])]
    return load_scenario(args.scenario, scheduler=args.scheduler, settings=settings, seed=getattr(args, "seed", None))


def _check_out(out: str | None, overwrite: bool) -> Path | None:
    if out is None:
        return None
    from vidur.outdir import check_output_dir

    p = check_output_dir(out)
    if p.exists() and any(p.iterdir()) and not overwrite:
        raise VidurError(f"output directory {p} already exists and is not empty; choose another --out or pass --overwrite")
    return p


def _print_json(report: dict) -> None:
    from vidur.validate.compare import _f

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, float):
            return _f(x)
        return x

    json.dump(clean(report), sys.stdout, indent=1)
    sys.stdout.write("\n")


def _validate(args) -> int:
    from vidur.validate.run import validate_scenario, write_outputs

    scenario = _load(args)
    out = _check_out(args.out, args.overwrite)
    result = validate_scenario(
        scenario,
        device=args.device,
        estimator=args.estimator,
        threads=args.threads,
        attention=args.attention,
        cuda_graphs=not args.no_cuda_graphs,
        progress=not (args.json or args.no_progress),
    )
    report = result.report
    if out is not None:
        write_outputs(result, out, plots=not args.no_plots)
    _emit(report, out, args.json)
    limit = args.max_iteration_error
    if limit is not None:
        med = report["iterations"]["all"]["median"]
        if med is None or med > limit:
            print(f"vidur: per-iteration median error {med} exceeds --max-iteration-error {limit}", file=sys.stderr)
            return 1
    return 0


def _compare(args) -> int:
    from vidur.validate.compare import (
        format_report,
        plot_cdfs,
        plots_available,
        write_json,
    )
    from vidur.validate.vllm_results import compare_with_real, load_bench_results

    scenario = _load(args)
    out = _check_out(args.out, args.overwrite)
    results = load_bench_results(args.real)
    report, real, sim = compare_with_real(results, args.trace, scenario, arrivals=args.arrivals)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "compare.json", report)
        (out / "summary.txt").write_text(format_report(report), encoding="utf-8")
        from vidur.validate.run import write_requests_csv

        write_requests_csv(out / "requests.csv", real, sim)
        if not args.no_plots and plots_available():
            plot_cdfs(out / "latency_cdf.png", real, sim, "measured on the server (solid) vs simulated (dashed)")
    _emit(report, out, args.json)
    return 0


def _common(p) -> None:
    p.add_argument("--scheduler", help="replica scheduler plugin name (overrides the scenario)")
    p.add_argument("-s", "--set", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a scenario key, e.g. -s cluster.device h200 (repeatable)")
    p.add_argument("--out", help="directory for the JSON report, CSV tables and plots")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.add_argument("--no-plots", action="store_true", help="write no plots into --out")


def _emit(report: dict, out, as_json: bool) -> None:
    """Print the report as JSON or as the terminal table (naming the output folder)."""
    from vidur.validate.compare import format_report

    if as_json:
        _print_json(report)
    else:
        print(format_report(report), end="")
        if out is not None:
            print(f"\nresults: {out}")


@hookimpl
def vidur_register_commands(cli):
    p = cli.add_parser(
        "validate",
        help="measure the simulator against a real PyTorch model run by the same scheduler",
        description=(
            "Run SCENARIO twice on one workload: for real (its scheduler drives a random-weight Llama-family "
            "model in PyTorch, the clock advanced by measured iteration times) and simulated (the estimator "
            "fitted on this device's profile); report errors per iteration, per request and for the cluster."
        ),
    )
    p.add_argument("scenario", help="scenario YAML (tensor_parallel and pipeline_parallel 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where the real model runs (default: cuda when present)")
    p.add_argument("--estimator", help="estimator for the simulated side (default: the scenario's; auto = this device's profile)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadiest on a shared machine)")
    p.add_argument("--attention", choices=("paged", "flash", "sdpa"),
                   help="attention kernel of the real model (default: paged FlashAttention on CUDA when available, then flash, else sdpa)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run decode batches eagerly on CUDA")
    p.add_argument("--seed", type=int, help="random seed (workload and weights)")
    p.add_argument("--max-iteration-error", type=float, metavar="FRAC",
                   help="exit 1 when the per-iteration median error exceeds FRAC (e.g. 0.05)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=_validate)

    p = cli.add_parser(
        "compare",
        help="compare timings measured on a real server (vLLM bench serve JSON) with a simulation",
        description=(
            "Simulate TRACE on SCENARIO's deployment and compare per-request TTFT, TPOT and E2E latency and "
            "cluster throughput with the per-request timings in RESULTS (the JSON `vllm bench serve "
            "--save-result --save-detailed` writes)."
        ),
    )
    p.add_argument("--real", required=True, metavar="RESULTS", help="vLLM bench serve results JSON")
    p.add_argument("--trace", required=True, help="the trace CSV the benchmark replayed (arrived_at, num_prefill_tokens, num_decode_tokens)")
    p.add_argument("--scenario", required=True, help="scenario YAML: the deployment that served it")
    p.add_argument("--arrivals", choices=("auto", "results", "trace"), default="auto",
                   help="arrival times from the results' start_times or the trace (default: results when present)")
    _common(p)
    p.set_defaults(func=_compare)
