"""Bad trace files give one-line VidurErrors that name the file and the line."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from vidur.errors import VidurError
from vidur.workload import TraceArrivals, TraceLengths
from vidur.workload import trace as tr

HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"


@pytest.fixture(autouse=True)
def fresh_cache():
    tr.clear_cache()
    yield
    tr.clear_cache()


def write(tmp_path: Path, text: str, name: str = "t.csv", mode: str = "w") -> Path:
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)  # type: ignore[arg-type]
    else:
        p.write_text(text)
    return p


def error_of(fn, *args) -> str:
    with pytest.raises(VidurError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope.csv"
    assert error_of(tr.read_lengths, p) == f"trace file not found: {p}"
    assert error_of(lambda: TraceArrivals(TraceArrivals.Config(path=str(p)))) == f"trace file not found: {p}"
    assert error_of(lambda: TraceLengths(TraceLengths.Config(path=str(p)))) == f"trace file not found: {p}"


def test_directory(tmp_path):
    assert error_of(tr.read_arrivals, tmp_path) == f"trace path is not a file: {tmp_path}"


@pytest.mark.parametrize("text", ["", "\n\n", " , \n"])
def test_empty_file(tmp_path, text):
    p = write(tmp_path, text)
    assert error_of(tr.read_arrivals, p).startswith(f"trace file is empty: {p}")


def test_header_only(tmp_path):
    p = write(tmp_path, HEADER)
    assert error_of(tr.read_lengths, p) == f"trace file has a header but no rows: {p}; add one row per request"


def test_missing_column_names_the_columns_found(tmp_path):
    p = write(tmp_path, "arrived_at,prompt,num_decode_tokens\n0,1,1\n")
    msg = error_of(tr.read_lengths, p)
    assert msg.startswith(f"trace {p} has no column 'num_prefill_tokens'")
    assert "columns found: 'arrived_at', 'prompt', 'num_decode_tokens'" in msg
    assert len(tr.read_arrivals(p)) == 1  # the arrivals are still readable


def test_non_numeric_names_line(tmp_path):
    # line 1 header, line 2, line 3 blank (skipped, still counted), line 4 bad
    p = write(tmp_path, HEADER + "0,10,5\n\n1,10,abc\n2,10,5\n")
    assert error_of(tr.read_lengths, p) == f"{p} line 4: num_decode_tokens 'abc' is not a non-negative integer"


@pytest.mark.parametrize(
    "row,column,cell",
    [
        ("0,-3,5", "num_prefill_tokens", "-3"),
        ("0,10,1.5", "num_decode_tokens", "1.5"),
        ("0,10,", "num_decode_tokens", ""),
        ("0,nan,4", "num_prefill_tokens", "nan"),
        ("0,10,inf", "num_decode_tokens", "inf"),
    ],
)
def test_bad_counts(tmp_path, row, column, cell):
    p = write(tmp_path, HEADER + "0,1,1\n" + row + "\n")
    assert error_of(tr.read_lengths, p) == f"{p} line 3: {column} {cell!r} is not a non-negative integer"


@pytest.mark.parametrize("cell", ["-1", "soon", "nan", "inf"])
def test_bad_arrival(tmp_path, cell):
    p = write(tmp_path, HEADER + "0,1,1\n" + cell + ",1,1\n")
    assert error_of(tr.read_arrivals, p) == f"{p} line 3: arrived_at {cell!r} is not a non-negative number of seconds"


def test_unsorted_arrivals(tmp_path):
    p = write(tmp_path, HEADER + "0,1,1\n5,1,1\n3,1,1\n")
    msg = error_of(tr.read_arrivals, p)
    assert msg == f"{p} line 4: arrived_at 3 is earlier than the row before (5); sort the trace by arrived_at"


def test_ragged_row(tmp_path):
    p = write(tmp_path, HEADER + "0,1,1\n1,2\n")
    msg = error_of(tr.read_lengths, p)
    assert msg.startswith(f"{p} line 3: 2 fields, but the header has 3")


def test_not_text(tmp_path):
    p = write(tmp_path, b"\xff\xfe\x00\x01garbage\x80\x81", mode="wb")
    assert error_of(tr.read_lengths, p).startswith(f"trace file is not UTF-8 text: {p}")


def test_zero_tokens_clamped_and_counted(tmp_path, caplog):
    p = write(tmp_path, HEADER + "0,10,0\n1,0,3\n2,10,0\n")
    with caplog.at_level(logging.WARNING, logger="vidur.workload.trace"):
        data = tr.read_lengths(p)
    assert data.prompt.tolist() == [10, 1, 10]
    assert data.output.tolist() == [1, 3, 1]
    assert (data.clamped_prompt, data.clamped_output) == (1, 2)
    assert re.search(r"1 rows with num_prefill_tokens 0 and 2 rows with num_decode_tokens 0", caplog.text)
    p2, o2 = TraceLengths(TraceLengths.Config(path=str(p))).generate(np.random.default_rng(), 3)
    assert (o2 >= 1).all() and (p2 >= 1).all()


def test_bom_whitespace_and_extra_columns(tmp_path):
    p = write(tmp_path, "\ufeff arrived_at , num_prefill_tokens,num_decode_tokens,note\n0, 12 ,3,x\n1.5,7,2,y\n")
    assert tr.trace_columns(p) == ["arrived_at", "num_prefill_tokens", "num_decode_tokens", "note"]
    assert tr.read_arrivals(p).tolist() == [0.0, 1.5]
    assert tr.read_lengths(p).prompt.tolist() == [12, 7]


def test_cache_reuses_and_invalidates(tmp_path):
    p = write(tmp_path, HEADER + "0,10,5\n1,20,6\n")
    first = tr.read_lengths(p)
    assert tr.read_lengths(str(p)) is first  # same parse, however the path is spelled
    assert tr.read_arrivals(p) is tr.read_arrivals(p)
    with pytest.raises(ValueError):
        first.prompt[0] = 99  # cached arrays are read-only
    p.write_text(HEADER + "0,30,5\n1,40,6\n")
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = tr.read_lengths(p)
    assert second is not first and second.prompt.tolist() == [30, 40]
    assert len(tr._CACHE) == 1  # the stale version was dropped


def test_error_on_a_bad_file_is_not_cached_as_good(tmp_path):
    p = write(tmp_path, HEADER + "0,10,abc\n")
    error_of(tr.read_lengths, p)
    error_of(tr.read_lengths, p)  # still an error on the second read
