"""Built-in sub-command ``sweep`` (compare policies with confidence intervals), registered as a plugin."""

from __future__ import annotations

import sys
from pathlib import Path

from vidur.engine.budget import check_simulations
from vidur.errors import VidurError
from vidur.hookspecs import hookimpl


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise VidurError(f"{flag} takes numbers separated by commas, e.g. {flag} 4,8,12; got {text!r}") from None
    if not vals or any(not (v > 0 and v < float("inf")) for v in vals):
        raise VidurError(f"{flag} takes positive numbers separated by commas, got {text!r}")
    return list(dict.fromkeys(vals))


#: how to bring a sweep under MAX_SIMULATIONS
_SPLIT = "split the sweep into several calls (--seed-list, fewer --qps/--load values, policies or workloads)"


def _seed_list(args, base_seed: int) -> list[int]:
    if args.seed_list is not None:
        try:
            seeds = [int(x) for x in args.seed_list.split(",") if x.strip()]
        except ValueError:
            raise VidurError(f"--seed-list takes integers separated by commas, got {args.seed_list!r}") from None
        if not seeds or min(seeds) < 0:
            raise VidurError(f"--seed-list takes integers >= 0, got {args.seed_list!r}")
        return list(dict.fromkeys(seeds))
    if args.seeds < 1:
        raise VidurError(f"--seeds must be >= 1, got {args.seeds}")
    check_simulations(args.seeds, f"--seeds {args.seeds:,}", _SPLIT)
    return list(range(base_seed, base_seed + args.seeds))


def build_spec(args, host=None):
    """The :class:`~vidur.sweep.spec.SweepSpec` of ``vidur sweep``'s arguments."""
    import copy

    from vidur.config import load_yaml
    from vidur.plugins import get_host
    from vidur.scenario import _resolve_paths, apply_overrides, scenario_from_dict
    from vidur.sweep.spec import (
        SweepSpec,
        Variant,
        WorkloadChoice,
        build_policies,
        load_workload_file,
        parse_variant,
        split_variants,
        trace_workload,
    )

    host = host or get_host()
    raw = load_yaml(args.scenario)
    _resolve_paths(raw, Path(args.scenario).resolve().parent)
    settings = [(k, v) for k, v in (args.set or [])]
    if args.requests is not None:
        settings.append(("workload.num_requests", str(args.requests)))
    raw = apply_overrides(raw, settings=settings, host=host)
    if args.requests is not None:
        raw["workload"].pop("duration", None)
    base = scenario_from_dict(raw, host)  # the scenario itself must be valid
    from vidur.model.catalog import load_model

    load_model(base.model, host)  # every cell's model: an unknown one is refused once, not skipped per cell
    replicas = [parse_variant(t, "--policy") for t in split_variants(args.policy)]
    if replicas and replicas[0].name == "all" and len(replicas) == 1:
        replicas = [Variant(n) for n in host.names("replica_scheduler")]
    routers = [parse_variant(t, "--router") for t in split_variants(args.router)]
    replicas = replicas or [Variant(base.replica_scheduler.name)]
    routers = routers or [Variant(base.global_scheduler.name)]
    for v in replicas:
        host.get("replica_scheduler", v.name)
    for v in routers:
        host.get("global_scheduler", v.name)
    policies = build_policies(replicas, routers)
    workloads = [load_workload_file(p) for p in (args.workload or [])]
    workloads += [trace_workload(p, raw) for p in (args.trace or [])]
    if not workloads:
        workloads = [WorkloadChoice(Path(args.scenario).stem, None)]
    labels = [w.label for w in workloads]
    if len(set(labels)) != len(labels):
        raise VidurError(f"two workloads are named {sorted({x for x in labels if labels.count(x) > 1})[0]!r}; "
                         "give the files distinct names")
    if args.qps and args.load:
        raise VidurError("give --qps (request rates) or --load (multiples of the scenario's rate), not both")
    if args.qps:
        loads: list[float | None] = list(_floats(args.qps, "--qps"))
    elif args.load:
        rate = getattr(base.workload.arrival.config, "qps", None)
        if rate is None:
            raise VidurError(f"--load multiplies the scenario's workload.arrival.qps, which the "
                             f"{base.workload.arrival.name!r} arrival process does not set; give --qps instead")
        loads = [round(f * rate, 9) for f in _floats(args.load, "--load")]
    else:
        loads = [None]
    seeds = _seed_list(args, base.seed)
    check_simulations(
        len(policies) * len(workloads) * len(loads) * len(seeds),
        f"{len(policies)} policies x {len(workloads)} workloads x {len(loads)} loads x {len(seeds)} seeds", _SPLIT,
    )
    baseline = args.baseline or policies[0].label
    if baseline not in [p.label for p in policies]:
        raise VidurError(f"--baseline {baseline!r} is not one of the policies: {', '.join(p.label for p in policies)}")
    return SweepSpec(scenario=copy.deepcopy(raw), policies=policies, workloads=tuple(workloads), loads=tuple(loads),
                     seeds=tuple(seeds), baseline=baseline, name=Path(args.scenario).stem)


def _sweep(args) -> int:
    from vidur.search.executors import check_ray_address
    from vidur.sweep.driver import run_sweep

    if args.jobs is not None and args.jobs < 1:
        raise VidurError(f"--jobs must be >= 1, got {args.jobs}")
    if args.address and args.executor != "ray":
        raise VidurError("--address needs --executor ray")
    spec = build_spec(args)
    if args.list:
        for c in spec.cells():
            print(f"{c.policy.label}  {c.workload.label}  {'scenario load' if c.qps is None else f'{c.qps:g} QPS'}  seed {c.seed}")
        print(f"{len(spec.cells())} simulations")
        return 0
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise VidurError("--executor ray needs Ray: pip install 'vidur-sim[ray]'") from None
        check_ray_address(args.address)
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{spec.name}"
    try:
        outcome = run_sweep(spec, out, executor=args.executor, jobs=args.jobs, address=args.address,
                            progress=not args.no_progress, fresh=args.fresh, plots=not args.no_plots)
    except KeyboardInterrupt:
        from vidur.search.store import ResultStore

        n = len(ResultStore(out / "cells.jsonl").load())
        print(f"vidur: interrupted; {n} finished simulation(s) are saved in {out / 'cells.jsonl'}: "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    print(outcome.report, end="")
    print(f"output directory: {out}")
    return 1 if outcome.errors else 0


@hookimpl
def vidur_register_commands(cli):
    p = cli.add_parser(
        "sweep",
        help="compare policies over seeds and loads, with confidence intervals",
        description=(
            "Simulate every policy (replica scheduler x router, with options) on the same request streams, for "
            "each workload, load level and seed; report each headline metric's mean and 95 %% confidence interval "
            "over seeds, paired differences against a baseline with their p-values, and plots (latency and "
            "goodput against load, overlaid CDFs). Resumes: rerunning with the same --out skips simulations "
            "already done. Exit status: 0 when done, 1 when a simulation failed, 2 on bad input."
        ),
    )
    p.add_argument("scenario", help="scenario YAML: the model, cluster and workload every policy runs")
    p.add_argument("--policy", action="append", metavar="NAME[:K=V,...]",
                   help="replica scheduler to compare, with options (repeatable; 'vllm,sarathi' lists several; "
                        "'all' takes every installed one); default: the scenario's")
    p.add_argument("--router", action="append", metavar="NAME[:K=V,...]",
                   help="global scheduler (router) to compare, with options (repeatable); default: the scenario's")
    p.add_argument("--baseline", help="the policy the others are compared with (default: the first)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds, from the scenario's seed up (default 5)")
    p.add_argument("--seed-list", help="these seeds instead, e.g. 0,3,7")
    p.add_argument("--qps", help="load levels as request rates, e.g. 4,8,12,16 (default: the scenario's)")
    p.add_argument("--load", help="load levels as multiples of the scenario's workload.arrival.qps, e.g. 0.5,1,1.5")
    p.add_argument("--workload", action="append", metavar="YAML",
                   help="a file with a workload: mapping to run instead of the scenario's (repeatable)")
    p.add_argument("--trace", action="append", metavar="CSV",
                   help="replay a trace's arrivals and lengths instead of the scenario's workload (repeatable)")
    p.add_argument("--requests", type=int, help="requests per simulation (sets workload.num_requests)")
    p.add_argument("-s", "--set", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a scenario key, e.g. -s cluster.num_replicas 8 (repeatable)")
    p.add_argument("--out", help="output directory (default runs/sweep-<scenario>; reused to resume)")
    p.add_argument("-j", "--jobs", type=int, help="worker processes (default: every core)")
    p.add_argument("--executor", choices=("process", "serial", "ray"), default="process",
                   help="process pool (default), serial (in this process) or ray")
    p.add_argument("--address", help="Ray cluster address (HOST:PORT or ray://HOST:PORT); default: a local Ray")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out and start over")
    p.add_argument("--list", action="store_true", help="list the simulations and exit")
    p.add_argument("--no-plots", action="store_true", help="write no plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_sweep)
