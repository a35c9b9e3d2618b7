"""Built-in sub-commands for onboarding a model or GPU: ``profile``, ``fit``, ``estimate``, ``import-vidur``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vidur.errors import VidurError
from vidur.hookspecs import hookimpl


def _pair(text: str, flag: str, default_second: int | None) -> tuple[int, int]:
    parts = str(text).split(":")
    try:
        if len(parts) == 1 and default_second is not None:
            return int(parts[0]), default_second
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    form = "CHUNK[:CONTEXT]" if default_second is not None else "BATCH:CONTEXT"
    raise VidurError(f"{flag} {text!r}: expected {form} with integers, e.g. {flag} 512:2048")


def _find_profile_arg(text: str) -> Path:
    """A profile directory, or a profile named ``<device>/<org>/<model>`` under the profile roots."""
    p = Path(text).expanduser()
    if p.is_dir():
        return p
    from vidur.store.profiles import profile_roots

    name = text[len("profiles/"):] if text.startswith("profiles/") else text
    for root in profile_roots():
        if (root / name).is_dir():
            return root / name
    raise VidurError(
        f"profile {text!r} not found: give a profile directory or <device>/<org>/<model> under "
        f"{', '.join(str(r) for r in profile_roots()) or '$VIDUR_PROFILE_PATH'}"
    )


# --- vidur fit --------------------------------------------------------------------


def _fit(args) -> int:
    from vidur.fit.report import fit_command

    path = _find_profile_arg(args.profile)
    if args.calibrate_roofline:
        _roofline_device(path)  # before fitting: nothing written when it cannot be done
    rep = fit_command(path, holdout=args.holdout, out=args.out, seed=args.seed)
    if args.calibrate_roofline:
        rep["roofline"] = _calibrate_roofline(path)
    if args.json:
        print(json.dumps(rep, indent=1, default=str))
        return 0
    print(f"profile {rep['profile']} (data hash {rep['data_hash']})")
    print(f"fitted {sum(rep['points'].values())} points in {rep['fit_seconds']:.2f} s -> {rep['fitted']}")
    if "holdout" in rep:
        print(f"held-out accuracy ({args.holdout:.0%} of the points left out, fitted on the rest):")
        print(f"  {'tp':>3s} {'operator':18s} {'MAPE %':>7s} {'max %':>7s} {'points':>6s}")
        for tp, ops in sorted(rep["holdout"].items()):
            for op, r in sorted(ops.items()):
                print(f"  {tp:>3} {op:18s} {r['mape']:7.2f} {r['max_ape']:7.2f} {r['n_test']:6d}")
    if rep.get("row_holdout") and any(rep["row_holdout"].values()):
        print("between profiled rows (each interior chunk length / decode batch left out, predicted from the others):")
        for tp, ops in sorted(rep["row_holdout"].items()):
            for op, r in sorted(ops.items()):
                print(f"  {tp:>3} {op:18s} {r['mape']:7.2f} {r['max_ape']:7.2f} {r['n_test']:6d}")
    if "roofline" in rep:
        r = rep["roofline"]
        print("roofline calibrated on this profile (MAPE before -> after):")
        for part, e in r["calibration"].items():
            if isinstance(e, dict):
                print(f"  {part:12s} {e['mape_before']:6.1f} % -> {e['mape_after']:5.1f} %")
        print("  config: " + ", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in r["config"].items()))
        print(f"  use it in a scenario: {r['use']}")
    return 0


def _roofline_device(path: Path):
    """The catalog device a profile was measured on, or one line saying the roofline cannot be calibrated."""
    from vidur.plugins import get_host
    from vidur.store.profiles import read_metadata

    name = read_metadata(path).get("device")
    host = get_host()
    if name not in host.names("device"):
        raise VidurError(
            f"--calibrate-roofline fits efficiencies against a device's datasheet peaks (FLOP/s, memory bandwidth), "
            f"and the profile's device {name!r} has none in the catalog (`vidur plugins` lists the devices); "
            f"this profile prices runs directly (runtime_estimator: profile)"
        )
    return host.get("device", name)


def _calibrate_roofline(path: Path) -> dict:
    """Fit the roofline to a profile (token-level operators and attention): its config and the fit's errors."""
    import attrs

    from vidur.estimate.roofline import RooflineConfig, RooflineEstimator
    from vidur.fit.roofline import calibrated_config
    from vidur.hardware.catalog import default_node

    device = _roofline_device(path)
    cfg, report = calibrated_config(path, device, default_node(device.name), RooflineConfig(), RooflineEstimator)
    fields = {k: v for k, v in attrs.asdict(cfg).items() if v is not None and k != "calibrate_from"}
    return {"config": fields, "calibration": report, "use": f"runtime_estimator: {{name: roofline, calibrate_from: {path}}}"}


# --- vidur estimate --------------------------------------------------------------------


def _capacity_notes(args, prefills, decodes) -> list[str]:
    """Warnings for an iteration no deployment could run: a sequence past the model's context, or
    more KV than one replica's GPUs hold (the ``paged`` planner's defaults, as ``vidur run`` plans)."""
    from vidur.resolve.device import resolve_device
    from vidur.model.catalog import load_model
    from vidur.plugins import get_host

    host = get_host()
    model = load_model(args.model, host)
    notes = []
    seqs = [(q + c, f"--prefill {q}:{c}") for q, c in prefills] + [(c + 1, f"--decode {b}:{c}") for b, c in decodes]
    longest, flag = max(seqs) if seqs else (0, "")
    if longest > model.max_position_embeddings:
        notes.append(
            f"{flag} makes a sequence of {longest} tokens but {model.name} supports "
            f"{model.max_position_embeddings}: this iteration cannot run on a real engine"
        )
    kv = sum(q + c for q, c in prefills) + sum(b * (c + 1) for b, c in decodes)
    try:
        device = resolve_device(args.device, host, node=args.node, profile=args.profile).spec
        planner = host.get("memory_planner", "paged")
        plan = planner(planner.Config()).plan(model, device, args.tp, args.pp)
    except VidurError as exc:
        return notes + [str(exc)]
    cap = plan.num_blocks * plan.block_size
    if kv > cap:
        notes.append(
            f"the iteration holds {kv:,} tokens of KV cache but tp={args.tp} pp={args.pp} on {device.name} has room "
            f"for {cap:,} (paged planner defaults): raise --tp/--pp or shrink the batch"
        )
    return notes



def _policy_for_pricing(name: str | None, pp: int):
    """``vidur estimate --scheduler NAME``: (the engine that replica scheduler models, a function
    building it with its default settings around the estimator), as a run builds it; (None, None)
    without the flag."""
    if name is None:
        return None, None
    from vidur.plugins import get_host
    from vidur.scheduler.prefix_cache import make_kv_manager

    cls = get_host().get("replica_scheduler", name)

    def build(est):
        kv = make_kv_manager(False, 1024, cls.kv_block_size or 16)
        try:
            return cls(cls.Config(), kv, 0, pp, estimator=est)
        except VidurError:
            raise
        except Exception as exc:
            raise VidurError(f"replica scheduler {name!r} could not be built with its default settings to price "
                             f"an iteration: {type(exc).__name__}: {exc}") from None

    return getattr(cls, "models_engine", None), build


def _estimate(args) -> int:
    from vidur.resolve.price import estimate_iteration

    prefills = [_pair(p, "--prefill", 0) for p in args.prefill or []]
    decodes = [_pair(d, "--decode", None) for d in args.decode or []]
    engine, policy = _policy_for_pricing(args.scheduler, args.pp)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = estimate_iteration(
            args.model,
            args.device,
            args.tp,
            prefills,
            decodes,
            pp=args.pp,
            node=args.node,
            estimator=args.estimator,
            profile=args.profile,
            engine_mode=args.engine_mode,
            engine=engine,
            policy=policy,
        )
    notes = [str(w.message) for w in caught] + _capacity_notes(args, prefills, decodes)
    res["scheduler"] = args.scheduler
    if args.json:
        res["warnings"] = notes
        print(json.dumps(res, indent=1))
        return 0
    b = res["batch"]
    print(f"{res['model']} on {res['device']} ({res['node']}), tp={res['tp']} pp={res['pp']}")
    if args.scheduler:
        print(f"priced as a {args.scheduler} run prices it (the replica scheduler's default settings)")
    print(f"estimator: {res['estimator_detail']}  [{res['estimator_reason']}]")
    from vidur.resolve.provenance import Provenance

    prov = Provenance(**{**res["provenance"], "skipped": tuple(res["provenance"]["skipped"])})
    for line in [prov.header()] + prov.notes():
        print(f"  {line}")
    print(
        f"batch: {b['num_prefill']} prefill chunk(s) ({b['prefill_tokens']} tokens), "
        f"{b['num_decode']} decode(s) (KV {b['decode_kv']}), {b['num_tokens']} tokens"
    )
    gpu = res["gpu_ms"]
    print(f"  {'operator':22s} {'ms':>10s} {'share':>7s}")
    for op, ms in sorted(res["ops"].items(), key=lambda kv: -kv[1]):
        share = ms / gpu * 100 if gpu else 0.0
        print(f"  {op:22s} {ms:10.4f} {share:6.1f}%")
    print(f"  {'gpu_ms':22s} {gpu:10.4f}")
    if res["launch_stall_ms"]:
        print(f"  {'+ launch stalls':22s} {res['launch_stall_ms']:10.4f}")
    if res["host_overlap"]:
        print(f"  {'cpu overhead':22s} {res['cpu_overhead_ms']:10.4f}  (overlapped by {args.scheduler}'s engine: "
              "a step takes the larger)")
    else:
        print(f"  {'+ cpu overhead':22s} {res['cpu_overhead_ms']:10.4f}")
    print(f"  {'total_ms':22s} {res['total_ms']:10.4f}")
    for n in notes:
        print(f"warning: {n}", file=sys.stderr)
    return 0


# --- vidur import-vidur ---------------------------------------------------------------------


def _import(args) -> int:
    from vidur.profile.vidur_import import import_vidur
    from vidur.model.catalog import load_model

    model = load_model(args.model)
    from vidur.store.profiles import user_profiles_dir

    out = args.out or str(Path(args.root or user_profiles_dir()) / args.device / model.name)
    from vidur.outdir import check_output_dir

    check_output_dir(out, "--out" if args.out else "the profile directory")
    p = import_vidur(args.src, out, model=model, device=args.device, attention=args.attention, network=args.network)
    import warnings

    from vidur.store.profiles import pricing_gap, read_metadata

    meta = read_metadata(p)
    for tp, info in sorted(meta["shards"].items(), key=lambda kv: int(kv[0])):
        print(f"tp{tp}: {info['rows']} rows ({', '.join(info.get('ops', []))})")
    print(f"imported into {p}")
    gaps = sorted({gap for tp in meta["shards"] if (gap := pricing_gap(meta, int(tp)))})
    if gaps:
        warnings.warn(
            f"{p} is incomplete: {'; '.join(gaps)}. It cannot price a batch, so runtime_estimator: auto will not use "
            f"it (the roofline is calibrated on it instead); add --attention ATTENTION_CSV to import a complete profile",
            UserWarning,
            stacklevel=1,
        )
    return 0


@hookimpl
def vidur_register_commands(cli):
    """Add ``profile``, ``fit``, ``estimate`` and ``import-vidur``."""
    from vidur.profile.cli import add_arguments, run

    p = cli.add_parser(
        "profile",
        help="measure a model's operators on this machine's GPU (or CPU) with PyTorch",
        description="Profile one decoder layer per tensor-parallel shard into <profiles root>/<device>/<model>/. "
        "Interrupted runs resume when the same command is run again.",
    )
    add_arguments(p)
    p.set_defaults(func=run)

    f = cli.add_parser(
        "fit",
        help="fit the runtime estimator to a profile and report held-out accuracy",
        description="Fit per-operator curves, cache them keyed by the profile data's hash, "
        "and report the MAPE on held-out points.",
    )
    f.add_argument("profile", help="profile directory (or <device>/<org>/<model> under a profiles root)")
    f.add_argument("--holdout", type=float, default=0.2, help="fraction of points held out (default 0.2; 0: none)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", help="where to write the fitted model (default <profile>/fitted.json)")
    f.add_argument("--calibrate-roofline", action="store_true", help="also calibrate the roofline (efficiencies, launch and attention overheads) on this profile")
    f.add_argument("--json", action="store_true", help="print the report as JSON")
    f.set_defaults(func=_fit)

    e = cli.add_parser(
        "estimate",
        help="price one iteration (per-operator breakdown)",
        description="Price one iteration of a model on a device: --prefill CHUNK[:CONTEXT] is one "
        "request's prefill chunk after CONTEXT cached tokens, --decode BATCH:CONTEXT is BATCH decoding "
        "requests with CONTEXT tokens of KV each (both repeatable). Uses the profile estimator when a "
        "profile exists for (device, model, tp), else the roofline; --scheduler prices it as a run with that "
        "replica scheduler would.",
    )
    e.add_argument("--model", required=True)
    e.add_argument("--device", required=True, help="device name (h100, a100 ... or a profiled device such as cpu)")
    e.add_argument("--tp", type=int, default=1)
    e.add_argument("--pp", type=int, default=1)
    e.add_argument("--node", help="node type (default: the device's usual node)")
    e.add_argument("--prefill", action="append", metavar="CHUNK[:CONTEXT]")
    e.add_argument("--decode", action="append", metavar="BATCH:CONTEXT")
    e.add_argument("--estimator", default="auto", help="auto (default), profile, roofline or a plugin's estimator")
    e.add_argument("--profile", help="use this profile directory")
    e.add_argument("--engine-mode", choices=("cuda_graphs", "eager"), help="engine mode (default cuda_graphs)")
    e.add_argument(
        "--scheduler", metavar="NAME",
        help="price the iteration as a run with this replica scheduler (default settings) does: the engine it models "
        "(vllm_v1, sglang: under auto the roofline, not profiles of vidur's own executor), its CUDA-graph sizes and "
        "host overlap (a step takes max(device, host))",
    )
    e.add_argument("--json", action="store_true", help='print {"gpu_ms", "total_ms", "estimator", "ops", ...}')
    e.set_defaults(func=_estimate)

    i = cli.add_parser(
        "import-vidur",
        help="convert profiles of the original Vidur (mlp.csv, attention.csv) into a profile",
    )
    i.add_argument("src", help="directory with mlp.csv (and attention.csv), or one of those files")
    i.add_argument("--model", required=True)
    i.add_argument("--device", required=True, help="the GPU they were measured on (a100, h100 ...)")
    i.add_argument("--attention", help="attention.csv kept elsewhere")
    i.add_argument("--network", help="directory with all_reduce.csv / send_recv.csv of the node")
    i.add_argument("--out", help="profile directory (default <root>/<device>/<model>)")
    i.add_argument("--root", help="profiles root (default: the first $VIDUR_PROFILE_PATH entry, else ~/.local/share/vidur/profiles)")
    i.set_defaults(func=_import)
