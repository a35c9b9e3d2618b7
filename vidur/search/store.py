"""Resumable results: one JSON line per finished configuration.

Each line is written, flushed and fsync'ed as soon as its configuration
finishes, so an interrupt (or a crash) loses only the configurations still
running. A torn last line (the process died mid-write) is ignored on load.
Lines are keyed by :func:`vidur.search.spec.config_key`; a rerun of the same
spec skips every key already present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ResultStore:
    """Append-only JSONL store of per-configuration results."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict[str, Any]]:
        """``{key: row}`` of every complete line (the last line per key wins)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return out
        with self.path.open("r", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn write
                if isinstance(row, dict) and "key" in row:
                    out[row["key"]] = row
        return out

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(row, sort_keys=True, allow_nan=False, default=_default) + "\n"
        # a torn previous line must not swallow this one
        prefix = ""
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    prefix = "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(prefix + data)
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()


def _default(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
