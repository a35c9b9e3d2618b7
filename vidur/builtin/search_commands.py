"""Built-in sub-command ``search`` (capacity planning), registered as a plugin."""

from __future__ import annotations

import sys
from pathlib import Path

from vidur.errors import VidurError
from vidur.hookspecs import hookimpl


def _search(args) -> int:
    from vidur.search import load_search_spec, run_search
    from vidur.search.executors import check_ray_address

    if args.jobs is not None and args.jobs < 1:
        raise VidurError(f"--jobs must be >= 1, got {args.jobs}")
    if args.address and args.executor != "ray":
        raise VidurError("--address needs --executor ray")
    if args.max_configs is not None and args.max_configs < 0:
        raise VidurError(f"--max-configs must be >= 0, got {args.max_configs}")
    spec = load_search_spec(args.spec, settings=[(k, v) for k, v in (args.set or [])])
    if args.list:
        for cfg in spec.configs:
            extra = f"  [skip: {cfg.skip_reason}]" if cfg.skip_reason else ""
            print(f"{cfg.index:>4}  {cfg.label}  ({cfg.gpus} GPUs){extra}")
        print(f"{len(spec.configs)} configurations")
        return 0
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise VidurError("--executor ray needs Ray: pip install 'vidur-sim[ray]'") from None
        check_ray_address(args.address)
    out = Path(args.out) if args.out else Path("runs") / f"search-{Path(args.spec).stem}"
    try:
        outcome = run_search(
            spec,
            out,
            executor=args.executor,
            jobs=args.jobs,
            address=args.address,
            progress=not args.no_progress,
            fresh=args.fresh,
            max_configs=args.max_configs,
            evidence=not args.no_evidence,
        )
    except KeyboardInterrupt:
        from vidur.search.store import ResultStore

        n = len(ResultStore(out / "results.jsonl").load())
        print(f"vidur: interrupted; {n} finished configuration(s) are saved in {out / 'results.jsonl'}: "
              "rerun the same command to resume", file=sys.stderr)
        return 130
    print(outcome.report, end="")
    print(f"output directory: {out}")
    if outcome.errors:
        return 1
    if outcome.best is None and not outcome.pending:
        return 1
    return 0


@hookimpl
def vidur_register_commands(cli):
    p = cli.add_parser(
        "search",
        help="capacity planning: the highest QPS per dollar that meets the SLOs",
        description=(
            "For every configuration of the spec's grid, binary-search the highest Poisson QPS meeting every SLO, "
            "price it, and write the results table, Pareto frontier, plots and a report. Resumes: rerunning with "
            "the same --out skips configurations already done. Exit status: 0 when done, 1 when no configuration "
            "meets the SLOs or a configuration failed, 2 on bad input."
        ),
    )
    p.add_argument("spec", help="search spec YAML (see scenarios/search-small.yaml)")
    p.add_argument("--out", help="output directory (default runs/search-<spec name>; reused to resume)")
    p.add_argument("-j", "--jobs", type=int, help="worker processes (default: every core)")
    p.add_argument("--executor", choices=("process", "serial", "ray"), default="process",
                   help="process pool (default), serial (in this process) or ray")
    p.add_argument("--address", help="Ray cluster address (HOST:PORT or ray://HOST:PORT); default: a local Ray")
    p.add_argument("-s", "--set", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a spec key, e.g. -s search.tolerance 0.05 (repeatable)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out and start over")
    p.add_argument("--max-configs", type=int, metavar="N", help="search at most N more configurations, then report")
    p.add_argument("--list", action="store_true", help="list the grid's configurations and exit")
    p.add_argument("--no-evidence", action="store_true", help="skip re-simulating the best configuration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_search)
