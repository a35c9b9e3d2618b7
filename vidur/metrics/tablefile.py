"""Run tables on disk: Parquet (the default, pyarrow) or CSV, and one reader for either.

A run directory's large tables (``requests``, ``batches``,
``batch_timeseries``, ``batch_histograms``) are written as
``<name>.parquet`` or, with ``metrics.table_format: csv``, ``<name>.csv``.
:func:`read_run_table` loads a table from a run directory in whichever
format it was written.

CSV: a header line, then one line per row; numbers with up to 9 decimals
(nanoseconds), trailing zeros dropped, NaN (undefined) as an empty field.
Parquet: the same columns with their dtypes (int64, float64, string); NaN
stays NaN.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vidur.errors import VidurError
from vidur.metrics._textfmt import Num, Text, format_rows

#: ``metrics.table_format`` values -> file suffix
TABLE_FORMATS = {"parquet": ".parquet", "csv": ".csv"}
#: rows per Parquet row group
PARQUET_ROW_GROUP = 131_072


def _column_part(values: np.ndarray):
    arr = np.asarray(values)
    if arr.dtype.kind in "iubf":
        return Num(arr)
    if arr.dtype.kind in "US":
        return Text(arr)
    return None


def _checked(columns: list[tuple[str, np.ndarray]], num_rows: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, values in columns:
        arr = np.asarray(values)
        if arr.dtype.kind not in "iubfUS":
            continue
        if len(arr) != num_rows:
            raise ValueError(f"column {name!r} has {len(arr)} rows, expected {num_rows}")
        out.append((name, arr))
    return out


def write_csv(path: Path, columns: list[tuple[str, np.ndarray]], num_rows: int) -> None:
    """Write columns (numeric or short ASCII strings) as CSV, vectorised."""
    columns = _checked(columns, num_rows)
    parts: list = []
    for _, arr in columns:
        parts += [_column_part(arr), b","]
    with open(path, "wb") as f:
        f.write((",".join(n for n, _ in columns) + "\n").encode())
        if not parts or num_rows == 0:
            return
        parts[-1] = b"\n"
        for chunk in format_rows(parts, num_rows):
            f.write(chunk)


def write_parquet(path: Path, columns: list[tuple[str, np.ndarray]], num_rows: int) -> None:
    """Write columns as one Parquet file (pyarrow; numeric columns without copies)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _checked(columns, num_rows)
    arrays = [pa.array(arr) if arr.dtype.kind not in "US" else pa.array(arr.astype(str)) for _, arr in columns]
    # no dictionary pages (their hash tables cost more memory than the table) and zstd; row
    # groups bound the writer's buffers
    pq.write_table(
        pa.Table.from_arrays(arrays, names=[n for n, _ in columns]), path,
        use_dictionary=False, compression="zstd", row_group_size=PARQUET_ROW_GROUP,
    )


def write_table(path: str | os.PathLike, columns: list[tuple[str, np.ndarray]], num_rows: int) -> None:
    """Write a table in the format its path's suffix names (``.parquet`` or ``.csv``)."""
    p = Path(path)
    if p.suffix == ".parquet":
        write_parquet(p, columns, num_rows)
    elif p.suffix == ".csv":
        write_csv(p, columns, num_rows)
    else:
        raise ValueError(f"a table file ends in .parquet or .csv, got {p.name!r}")


def table_path(run_dir: str | os.PathLike, name: str) -> Path:
    """The file of run table ``name`` (``requests``, ``batches``, ...) in ``run_dir``,
    Parquet or CSV; one clear error when the run has neither."""
    d = Path(run_dir)
    for suffix in TABLE_FORMATS.values():
        p = d / f"{name}{suffix}"
        if p.is_file():
            return p
    raise VidurError(f"{d} has no {name} table ({name}.parquet or {name}.csv)")


def read_table_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A table file (Parquet or CSV) as ``{column: numpy array}``: numbers as int64 or
    float64 (empty CSV fields as NaN), text as ``str`` arrays."""
    import pyarrow as pa

    p = Path(path)
    try:
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(p)
        else:
            import pyarrow.csv as pcsv

            t = pcsv.read_csv(p)
    except (OSError, pa.ArrowInvalid) as exc:
        raise VidurError(f"cannot read {p}: {exc}") from None
    out = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out[name] = np.asarray(col.to_pylist(), dtype=str)
        elif pa.types.is_null(col.type):  # a CSV column with every field empty
            out[name] = np.full(len(col), np.nan)
        else:
            arr = col.to_numpy()
            out[name] = arr.astype(np.float64) if arr.dtype == object else arr
    return out


def read_run_table(run_dir: str | os.PathLike, name: str) -> dict[str, np.ndarray]:
    """Run table ``name`` of ``run_dir`` (``requests``, ``batches``, ``batch_timeseries``,
    ``batch_histograms``) as columns, whichever format the run wrote."""
    return read_table_file(table_path(run_dir, name))
