"""Arguments and handler of ``vidur profile`` (also ``python -m vidur.profile``, which needs only
torch, numpy and attrs: handy on a bare GPU machine)."""

from __future__ import annotations

import argparse
import sys

from vidur.errors import VidurError


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise VidurError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise VidurError(f"{what} must be positive integers, got {text!r}")
    return vals


def _command_line() -> str:
    """The command as the user typed it (for the profile's provenance)."""
    argv = sys.argv
    if argv and argv[0].endswith("__main__.py"):
        return "python -m vidur.profile " + " ".join(argv[1:])
    if len(argv) > 1 and argv[1] == "profile":
        return "vidur " + " ".join(argv[1:])
    return " ".join(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="Hugging Face id or path to config.json")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--tp", default="1", help="tensor-parallel degrees, e.g. 1,2,4,8 (default 1)")
    p.add_argument("--out", help="profile directory (default <root>/<device>/<model>)")
    p.add_argument("--root", help="profiles root (default: the first $VIDUR_PROFILE_PATH entry, else ~/.local/share/vidur/profiles)")
    p.add_argument("--device-name", help="name of the device in the profile (default: detected SKU, e.g. h100)")
    p.add_argument("--grid", choices=("full", "cpu", "test"), help="measurement grid (default: full on GPU, cpu on CPU)")
    p.add_argument("--max-tokens", type=int, help="largest token count to measure (default 16384 GPU, 4096 CPU)")
    p.add_argument("--dtype", help="bfloat16 (GPU default), float16 or float32 (CPU default)")
    p.add_argument("--repeats", type=int, help="timed repeats per point")
    p.add_argument("--ops", help="only these operators (comma-separated)")
    p.add_argument("--threads", type=int, help="torch CPU threads (CPU profiles default to 1)")
    p.add_argument("--time-budget", type=float, help="stop (resumably) after this many seconds")
    p.add_argument("--force", action="store_true", help="re-measure complete shards")
    p.add_argument("--no-fit", action="store_true", help="do not fit the profile afterwards")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--collectives",
        action="store_true",
        help="also measure NCCL all-reduce/send-recv across this machine's GPUs (needs 2+ GPUs)",
    )


def run(args) -> int:
    """Handler: profile, report complete shards, fit (exit 1 when a shard is left incomplete)."""
    import attrs

    from vidur.store.profiles import complete_shards, read_metadata
    from vidur.model.catalog import load_model
    from vidur.profile.grids import CPU, FULL, PRESETS
    from vidur.profile.profiler import profile_model

    model = load_model(args.model)
    grid = PRESETS[args.grid] if args.grid else None
    if args.max_tokens:
        base = grid or (CPU if str(args.device).lower() == "cpu" else FULL)
        grid = attrs.evolve(base, max_tokens=args.max_tokens)
    if args.repeats is not None and args.repeats < 1:
        raise VidurError("--repeats must be at least 1")
    tps = _int_list(args.tp, "--tp")
    ops = [o for o in args.ops.split(",") if o] if args.ops else None
    out = profile_model(
        model,
        args.device,
        tps,
        out=args.out,
        root=args.root,
        device_name=args.device_name,
        grid=grid,
        dtype=args.dtype,
        repeats=args.repeats,
        ops=ops,
        progress=not args.quiet,
        force=args.force,
        time_budget_s=args.time_budget,
        command=_command_line(),
        threads=args.threads,
    )
    if getattr(args, "collectives", False):
        from vidur.store.profiles import write_metadata
        from vidur.profile.collectives import profile_collectives

        net = profile_collectives(out, backend="nccl" if str(args.device).startswith("cuda") else "gloo")
        meta = read_metadata(out)
        meta["network"] = net.name
        write_metadata(out, meta)
        print(f"collectives: {net}")
    meta = read_metadata(out)
    done = complete_shards(meta)
    todo = sorted(set(tps) - set(done))
    print(f"profile: {out} (complete shards: tp {', '.join(map(str, done)) or 'none'})")
    if todo:
        print(f"incomplete: tp {', '.join(map(str, todo))}; run the same command again to resume")
        return 1
    if not args.no_fit:
        from vidur.fit.report import fit_command

        rep = fit_command(out, holdout=0)
        print(f"fitted in {rep['fit_seconds']:.2f} s -> {rep['fitted']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidur.profile", description="Profile a model's operators (see `vidur profile`).")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except VidurError as exc:
        print(f"vidur profile: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidur profile: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
