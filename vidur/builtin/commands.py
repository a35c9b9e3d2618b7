"""Built-in sub-commands ``run`` and ``plugins``, registered as a plugin."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from vidur.hookspecs import hookimpl


def _run(args) -> int:
    from vidur.engine.run_scenario import default_out_dir, run_scenario
    from vidur.scenario import load_scenario

    settings = [(k, v) for k, v in (args.set or [])]
    scenario = load_scenario(
        args.scenario,
        scheduler=args.scheduler,
        global_scheduler=args.global_scheduler,
        settings=settings,
        seed=args.seed,
    )
    if args.chrome_trace or args.plots or args.no_progress:
        import attrs

        m, s = scenario.metrics, scenario.simulation
        scenario = scenario.replace(
            metrics=attrs.evolve(m, chrome_trace=m.chrome_trace or args.chrome_trace, plots=m.plots or args.plots),
            simulation=attrs.evolve(s, progress=s.progress and not args.no_progress),
        )
    if args.print_config:
        sys.stdout.write(scenario.to_yaml())
        return 0
    from vidur.metrics.table import slo_metrics  # checked before simulating, not after

    valid = slo_metrics()
    for name in scenario.metrics.slos:
        if name not in valid:
            from vidur.errors import VidurError
            from vidur.plugins import suggest

            raise VidurError(f"unknown SLO metric {name!r}{suggest(name, valid)}; valid metrics: {', '.join(valid)}")
    if args.address and args.executor != "ray":
        from vidur.errors import VidurError

        raise VidurError("--address needs --executor ray")
    if args.seeds is not None:
        with _ray_session(args):
            return _run_seeds(args, scenario)
    from vidur.outdir import check_output_dir, claim_run_dir, release_if_empty

    claimed = None
    if args.no_output:
        out = None
    elif args.out:  # refuse before simulating, not after
        out = check_output_dir(args.out)
        if not args.overwrite:
            from vidur.errors import VidurError
            from vidur.metrics.outputs import run_files_in

            previous = run_files_in(out)
            if previous:
                raise VidurError(f"{out} already holds a run ({', '.join(previous)}); choose another --out or pass --overwrite")
    else:  # runs/<scenario>-<time>, claimed now: a run started in the same second takes <name>-2
        out = claimed = claim_run_dir(default_out_dir(args.scenario))
    try:
        with _ray_session(args):
            result, summary = run_scenario(scenario, out, step_mode=args.step, overwrite=args.overwrite,
                                           executor=args.executor)
    except BaseException:
        release_if_empty(claimed)
        raise
    from vidur.metrics.report import format_summary_table

    run = summary["run"]
    ep = f" EP{run['expert_parallel']}" if run.get("expert_parallel", 1) != 1 else ""
    print(
        f"{run['model']} on {run['replicas']} x {run['device']} (TP{run['tensor_parallel']} PP{run['pipeline_parallel']}{ep}), "
        f"{run['replica_scheduler']} / {run['global_scheduler']}; estimator: {run['estimator']}"
    )
    prov = result.provenance
    if prov is not None:
        for line in [prov.header()] + prov.notes():
            print(f"  {line}")
    if result.execution:
        print(f"  simulated: {result.execution}")
    print(format_summary_table(summary))
    if out is not None:
        print(f"run directory: {out}")
    return 0


@contextmanager
def _ray_session(args):
    """With ``--executor ray``: join ``--address`` or start a local Ray (as search does), shut down after."""
    started = False
    if args.executor == "ray":
        from vidur.search.executors import start_ray

        started = start_ray(args.address, None)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def _run_seeds(args, scenario) -> int:
    """``vidur run --seeds N``: the scenario at seeds seed..seed+N-1, one run directory each
    (``<out>/seed-<s>``), and every headline metric's mean and 95 % interval over them."""
    import json
    import warnings

    from vidur.engine.run_scenario import default_out_dir, run_scenario
    from vidur.errors import VidurError
    from vidur.metrics.outputs import run_files_in
    from vidur.metrics.over_seeds import format_interval_table, interval_rows

    if args.seeds < 2:
        raise VidurError(f"--seeds must be >= 2 (an interval needs two runs), got {args.seeds}")
    if args.step or args.chrome_trace:
        raise VidurError("--seeds runs many simulations; drop --step / --chrome-trace (run one seed for those)")
    from vidur.engine.budget import check_simulations

    check_simulations(args.seeds, f"--seeds {args.seeds:,}", "run them in several calls (--seed FIRST --seeds N)")
    seeds = list(range(scenario.seed, scenario.seed + args.seeds))
    out = None if args.no_output else Path(args.out or default_out_dir(args.scenario))
    if out is not None and not args.overwrite:
        previous = [f"seed-{s}/{f}" for s in seeds for f in run_files_in(out / f"seed-{s}")]
        previous += [f for f in ("intervals.json", "intervals.csv") if (out / f).exists()]
        if previous:
            raise VidurError(f"{out} already holds runs ({', '.join(previous[:3])}); choose another --out or pass --overwrite")
    summaries = []
    clipped = 0
    for s in seeds:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, summary = run_scenario(scenario.replace(seed=s), None if out is None else out / f"seed-{s}",
                                      overwrite=args.overwrite, executor=args.executor)
        clipped = max(clipped, summary["run"].get("clipped_requests") or 0)
        for w in caught:
            if "clipped" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        summaries.append(summary)
    if clipped:
        warnings.warn(f"workload.lengths.max_tokens clipped up to {clipped} requests of a seed's run", stacklevel=2)
    rows = interval_rows(seeds, summaries)
    run = summaries[0]["run"]
    print(
        f"{run['model']} on {run['replicas']} x {run['device']} (TP{run['tensor_parallel']} PP{run['pipeline_parallel']}), "
        f"{run['replica_scheduler']} / {run['global_scheduler']}; estimator: {run['estimator']}"
    )
    print(format_interval_table(rows, seeds), end="")
    if out is not None:
        from vidur.search.outputs import write_csv

        (out / "intervals.json").write_text(json.dumps({"seeds": seeds, "metrics": rows}, indent=2, sort_keys=True) + "\n")
        write_csv(out / "intervals.csv", [{k: v for k, v in r.items() if k != "per_seed"} | {f"seed_{s}": x for s, x in r["per_seed"].items()} for r in rows])
        print(f"run directories: {out}/seed-{{{seeds[0]}..{seeds[-1]}}}; intervals: {out / 'intervals.csv'}")
    return 0


def _command_names(impl) -> list[str]:
    """The sub-commands a ``vidur_register_commands`` implementation adds."""
    import argparse

    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    try:
        impl.function(cli=sub)
    except Exception:  # reported when the real parser is built
        return ["?"]
    return list(sub.choices)


def _plugins(args) -> int:
    from vidur.plugins import KINDS, get_host

    host = get_host()
    regs = host.registries
    by_plugin: dict[str, dict[str, list[str]]] = {}
    dists: dict[str, str] = {}
    for kind, table in regs.items():
        for name, entry in table.items():
            by_plugin.setdefault(entry.plugin, {}).setdefault(kind, []).append(name)
            dists[entry.plugin] = entry.distribution
    for plugin in host.pm.get_plugins():
        pname = host.pm.get_name(plugin)
        dists.setdefault(pname, host.distribution_of(plugin))
        by_plugin.setdefault(pname, {})
    for impl in host.pm.hook.vidur_register_commands.get_hookimpls():
        by_plugin.setdefault(impl.plugin_name, {})["command"] = _command_names(impl)
    for pname in sorted(by_plugin, key=lambda p: (not p.startswith("vidur."), p)):
        print(f"{pname}  [{dists[pname]}]")
        for kind in sorted(by_plugin[pname]):
            print(f"    {kind:<22} {', '.join(sorted(by_plugin[pname][kind]))}")
    del KINDS
    return 0


@hookimpl
def vidur_register_commands(cli):
    p = cli.add_parser("run", help="simulate a scenario YAML", description="Simulate a scenario and write a run directory.")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--scheduler", help="replica scheduler plugin name (e.g. sarathi, vllm)")
    p.add_argument("--global-scheduler", help="global scheduler plugin name (round_robin, random, lor)")
    p.add_argument("-s", "--set", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a scenario key, e.g. -s replica_scheduler.chunk_size 1024 (repeatable)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="run seeds seed..seed+N-1 and report each headline metric's mean and 95%% interval "
                        "(run directories <out>/seed-<s>, intervals.csv/json in <out>)")
    p.add_argument("--out", help="run directory (default runs/<scenario>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-output", action="store_true", help="print the summary only, write no files")
    p.add_argument("--print-config", action="store_true", help="print the resolved scenario and exit")
    p.add_argument("--chrome-trace", action="store_true", help="also write trace.json (chrome://tracing, Perfetto)")
    p.add_argument("--plots", action="store_true", help="also write CDF plots (needs the plot extra)")
    p.add_argument("--step", action="store_true", help="step every iteration (no fast-forward); same results, slower")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--executor", choices=("process", "ray"), default="process",
                   help="where groups of replicas run when simulation.workers splits them: forked processes "
                        "(default) or Ray tasks (a local Ray, or the cluster at --address)")
    p.add_argument("--address", help="Ray cluster address (HOST:PORT or ray://HOST:PORT); default: a local Ray")
    p.set_defaults(func=_run)

    p = cli.add_parser("plugins", help="list installed plugins and what they register")
    p.set_defaults(func=_plugins)
