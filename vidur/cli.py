"""The ``vidur`` command line. Sub-commands come from plugins (built-ins too)."""

from __future__ import annotations

import argparse
import os
import sys

from vidur import __version__
from vidur.errors import VidurError


def build_parser(host=None) -> argparse.ArgumentParser:
    """The root parser with every plugin's sub-commands."""
    from vidur.plugins import get_host

    host = host or get_host()
    parser = argparse.ArgumentParser(
        prog="vidur",
        description="Simulate LLM inference serving: deployments, schedulers and workloads, on a CPU.",
    )
    parser.add_argument("--version", action="version", version=f"vidur {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for impl in host.pm.hook.vidur_register_commands.get_hookimpls():  # registration order: built-ins first
        try:
            impl.function(cli=sub)
        except Exception as exc:
            dist = host.distribution_of(impl.plugin)
            why = f"plugin {impl.plugin_name!r} ({dist}) failed in vidur_register_commands: {type(exc).__name__}: {exc}"
            if host.is_entry_point(impl.plugin_name):
                host.skip_broken(impl.plugin_name, why)  # an installed plugin: warn, keep the other commands
                continue
            raise VidurError(why) from None
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"vidur: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line to stderr and exit 2; warnings are one line too."""
    import warnings

    warnings.formatwarning = _one_line_warning
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        code = int(args.func(args) or 0)
    except VidurError as exc:
        print(f"vidur: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Writers removed their temporary files while the interrupt unwound (nothing half-written).
        print("vidur: interrupted", file=sys.stderr)
        if argv is None:  # the process's own command line: exit now, without freeing millions of objects
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    if argv is None:  # the process's own command line, done: leave without tearing the interpreter down
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process with ``code`` as a normal exit would, without its teardown.

    Python's exit would free every module and object (pyarrow's and numpy's
    included; ~50 ms of a short run) for nobody. What an exit owes others is
    done here: the ``atexit`` handlers run (multiprocessing, Ray, tempfile
    clean-up, plugins' own) and stdout/stderr are flushed. Not taken (a
    normal return) while another Python thread is alive (it would be joined),
    under a profiler or tracer (cProfile, coverage write their data after
    ``main`` returns), or when flushing fails (Python reports it as it always did).
    """
    threading = sys.modules.get("threading")
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    if threading is not None and threading.active_count() > 1:
        return
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
