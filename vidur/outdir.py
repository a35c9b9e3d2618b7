"""Output directories: checked before any work, claimed atomically, left clean after a kill.

Every command that writes a directory (``run``, ``validate``, ``compare``,
``import-vidur``, ``search``) calls :func:`check_output_dir` on it before it
simulates or measures anything, so a path that cannot be written (under a
file, read-only, on a full or read-only file system) is one line and exit
status 2 instead of a traceback after the work. :func:`claim_run_dir` picks
a default run directory that no other run started in the same second can
take; :func:`remove_stale_temps` removes the hidden temporary siblings that
a writer killed mid-write (SIGKILL: no cleanup ran) left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vidur.errors import VidurError

#: the hidden temporary sibling a writer fills before moving it into place: ``.<name>.tmp-<pid>-<hex>``
TEMP_INFIX = ".tmp-"


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse (one-line :class:`VidurError`) an output directory that cannot be created and written.

    Nothing is created: the nearest existing ancestor must be a writable
    directory (checked by creating and removing a temporary directory in
    it, which also catches read-only and full file systems, even as root).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VidurError(f"{flag} {p} is a file, not a directory; choose another {flag}")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise VidurError(f"{flag} {p} cannot be created: {probe} is a file, not a directory; choose another {flag}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".vidur-write-check-", dir=probe))
    except OSError as exc:
        raise VidurError(
            f"{flag} {p} cannot be written: {probe}: {exc.strerror or exc}; choose another {flag}"
        ) from None
    return p


def claim_run_dir(base: str | os.PathLike) -> Path:
    """Create and return ``base`` or, if taken, ``base-2``, ``base-3`` ... (atomic: two runs never share one)."""
    base = Path(base)
    check_output_dir(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        cand = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            cand.mkdir()
        except FileExistsError:
            continue
        return cand
    raise VidurError(f"no free run directory next to {base}; pass --out")


def release_if_empty(path: str | os.PathLike | None) -> None:
    """Remove a claimed run directory that the run never wrote into (it failed or was interrupted)."""
    if path is None:
        return
    try:
        Path(path).rmdir()  # only if empty
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of ``out`` whose writer process is gone; return them."""
    out = Path(out)
    parent = out.absolute().parent
    removed = []
    if not parent.is_dir():
        return removed
    for tmp in parent.glob(f".{out.name}{TEMP_INFIX}*"):
        rest = tmp.name[len(f".{out.name}{TEMP_INFIX}"):]
        pid = rest.split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed
