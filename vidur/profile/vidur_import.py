"""Importer of profiles in the original Vidur's CSV format.

Vidur keeps ``compute/<gpu>/<org>/<model>/mlp.csv`` (token-level operators
per ``num_tokens`` and ``num_tensor_parallel_workers``) and
``attention.csv`` (``batch_size``, ``prefill_chunk_size``,
``kv_cache_size``, ``is_prefill``), plus ``network/<node>/all_reduce.csv``
and ``send_recv.csv``. All times are milliseconds with
``time_stats.<op>.{min,max,mean,median,std}`` columns.

:func:`import_vidur` turns the compute CSVs into a profile directory of
this project (``metadata.json`` + ``tp<t>.csv``), so users of the original
bring their measurements along. Collective CSVs are fitted by
:mod:`vidur.fit.collectives` and stored as ``network.json`` beside it.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from vidur.errors import VidurError
from vidur.store import profiles as store
from vidur.store.profiles import MLP_OPS

#: mlp.csv shape columns -> ModelSpec fields
_MLP_SHAPE = {
    "n_head": "num_heads",
    "n_kv_head": "num_kv_heads",
    "n_embd": "hidden_size",
    "n_expanded_embd": "intermediate_size",
}  # vocab_size is not compared: Vidur pads it (32000 -> 32768)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except OSError as exc:
        raise VidurError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise VidurError(f"{path} is not a readable CSV file: {exc}") from None


def _stat(row: dict[str, str], op: str, stat: str, path: Path, lineno: int) -> float | None:
    v = row.get(f"time_stats.{op}.{stat}")
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except ValueError:
        raise VidurError(f"{path} line {lineno}: time_stats.{op}.{stat} is not a number ({v!r})") from None
    return x if math.isfinite(x) else None


def _row(op: str, vrow: dict, vop: str, n: float, batch: float, ctx: float, path: Path, lineno: int) -> tuple | None:
    med = _stat(vrow, vop, "median", path, lineno)
    if med is None or med <= 0:
        return None
    mean = _stat(vrow, vop, "mean", path, lineno) or med
    mn = _stat(vrow, vop, "min", path, lineno) or med
    std = _stat(vrow, vop, "std", path, lineno) or 0.0
    return (op, n, batch, ctx, med, mean, mn, std, 0)


def _int(row: dict, key: str, path: Path, lineno: int) -> int:
    try:
        return int(float(row[key]))
    except (KeyError, TypeError, ValueError):
        raise VidurError(f"{path} line {lineno}: column {key!r} missing or not an integer") from None


def _check_shape(row: dict, model: Any, path: Path) -> None:
    if model is None:
        return
    for col, field in _MLP_SHAPE.items():
        if col in row and hasattr(model, field) and int(float(row[col])) != getattr(model, field):
            raise VidurError(
                f"{path} was measured for another model ({col}={row[col]}, but {model.name} has "
                f"{field}={getattr(model, field)}); import it with the matching --model"
            )
    if "use_gated_mlp" in row and hasattr(model, "gated_mlp"):
        if (row["use_gated_mlp"].strip().lower() == "true") != bool(model.gated_mlp):
            raise VidurError(f"{path} was measured for another model (use_gated_mlp={row['use_gated_mlp']})")


def read_mlp_csv(path: str | Path, model: Any = None) -> dict[int, list[tuple]]:
    """``{tp: rows}`` of token-level operators from a Vidur ``mlp.csv``."""
    p = Path(path)
    fields, rows = _read_csv(p)
    if "num_tokens" not in fields or "num_tensor_parallel_workers" not in fields:
        raise VidurError(f"{p} is not a Vidur mlp.csv (needs num_tokens and num_tensor_parallel_workers columns)")
    if not rows:
        raise VidurError(f"{p} holds no measurements")
    _check_shape(rows[0], model, p)
    out: dict[int, list[tuple]] = {}
    for lineno, r in enumerate(rows, start=2):
        n = _int(r, "num_tokens", p, lineno)
        tp = _int(r, "num_tensor_parallel_workers", p, lineno)
        for vop, op in MLP_OPS.items():
            row = _row(op, r, vop, n, 0, 0, p, lineno)
            if row is not None:
                out.setdefault(tp, []).append(row)
    return out


def read_attention_csv(path: str | Path, model: Any = None) -> dict[int, list[tuple]]:
    """``{tp: rows}`` of attention (and KV-cache write) times from a Vidur ``attention.csv``."""
    p = Path(path)
    fields, rows = _read_csv(p)
    need = {"batch_size", "prefill_chunk_size", "kv_cache_size", "num_tensor_parallel_workers"}
    if not need <= set(fields):
        raise VidurError(f"{p} is not a Vidur attention.csv (needs {', '.join(sorted(need))})")
    out: dict[int, list[tuple]] = {}
    for lineno, r in enumerate(rows, start=2):
        if model is not None:
            for col, field in (("n_q_head", "num_heads"), ("n_kv_head", "num_kv_heads"), ("n_embd", "hidden_size")):
                if col in r and int(float(r[col])) != getattr(model, field):
                    raise VidurError(
                        f"{p} was measured for another model ({col}={r[col]}, but {model.name} has {field}={getattr(model, field)})"
                    )
        tp = _int(r, "num_tensor_parallel_workers", p, lineno)
        b = _int(r, "batch_size", p, lineno)
        q = _int(r, "prefill_chunk_size", p, lineno)
        ctx = _int(r, "kv_cache_size", p, lineno)
        is_prefill = str(r.get("is_prefill", q > 0)).strip().lower() in ("true", "1")
        rows_out = out.setdefault(tp, [])
        if is_prefill:
            row = _row("attn_prefill", r, "attn_prefill", q, b, ctx, p, lineno)
            ntok = q * b
        else:
            row = _row("attn_decode", r, "attn_decode", b, b, ctx, p, lineno)
            ntok = b
        if row is not None:
            rows_out.append(row)
        kv = _row("kv_cache_write", r, "attn_kv_cache_save", ntok, 0, 0, p, lineno)
        if kv is not None:
            rows_out.append(kv)
    return out


def find_vidur_files(src: str | Path) -> dict[str, Path]:
    """The Vidur CSVs present in ``src`` (a directory, or one CSV file)."""
    p = Path(src)
    if p.is_file():
        return {p.stem: p}
    if not p.is_dir():
        raise VidurError(f"{p} does not exist; give a directory holding mlp.csv (and attention.csv)")
    found = {n: p / f"{n}.csv" for n in ("mlp", "attention", "all_reduce", "send_recv") if (p / f"{n}.csv").is_file()}
    if "mlp" not in found and "attention" not in found:
        raise VidurError(f"{p} holds no Vidur mlp.csv or attention.csv")
    return found


def import_vidur(
    src: str | Path,
    out: str | Path,
    *,
    model: Any,
    device: str,
    attention: str | Path | None = None,
    network: str | Path | None = None,
) -> Path:
    """Convert Vidur-format CSVs under ``src`` into a profile directory ``out``.

    ``model`` is a :class:`~vidur.model.spec.ModelSpec` (its shape is
    checked against the CSV's); ``device`` names the GPU. ``attention``
    (an ``attention.csv``) and ``network`` (a directory with
    ``all_reduce.csv``/``send_recv.csv``) may live elsewhere. Returns ``out``.
    """
    files = find_vidur_files(src)
    if attention is not None:
        files["attention"] = Path(attention)
    shards: dict[int, list[tuple]] = {}
    if "mlp" in files:
        for tp, rows in read_mlp_csv(files["mlp"], model).items():
            shards.setdefault(tp, []).extend(rows)
    if "attention" in files:
        for tp, rows in read_attention_csv(files["attention"], model).items():
            shards.setdefault(tp, []).extend(rows)
    if not shards:
        raise VidurError(f"no usable measurements in {src}")
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": store.FORMAT,
        "model": model.name,
        "model_spec": attrs.asdict(model),
        "device": device,
        "device_info": {"name": device},
        "dtype": "float16",
        "method": "imported from Vidur-format CSVs (ms; median of repeats)",
        "source": {k: str(v) for k, v in sorted(files.items())},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
        "layers_profiled": 1,
        "shards": {},
    }
    for tp, rows in sorted(shards.items()):
        f = o / store.shard_file(tp)
        store.write_shard_rows(f, rows, append=False)
        ops = sorted({r[0] for r in rows})
        meta["shards"][str(tp)] = {"file": f.name, "rows": len(rows), "complete": True, "ops": ops}
    net_dir = Path(network) if network is not None else (Path(src) if Path(src).is_dir() else None)
    if net_dir is not None and any((net_dir / f"{c}.csv").is_file() for c in ("all_reduce", "send_recv")):
        from vidur.fit.collectives import fit_network, fits_to_json

        fits = fit_network(net_dir)
        (o / "network.json").write_text(json.dumps(fits_to_json(fits), indent=1) + "\n", encoding="utf-8")
        meta["network"] = "network.json"
    store.write_metadata(o, meta)
    return o
