"""Reading traces: any header, any resolution from 5 minutes to an hour, gaps, and errors naming file, row and value."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from examples.carbon import DIURNAL_GRID, WINDY_GRID
from mape.errors import DataSourceError
from mape.plan.scheduling.trace import read_trace

UTC = timezone.utc
T0 = datetime(2026, 3, 10, tzinfo=UTC)


def write(tmp_path: Path, text: str, name: str = "grid.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows(step_minutes: int, values: list[float], fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return "".join(f"{(T0 + timedelta(minutes=step_minutes * i)).strftime(fmt)},{v}\n" for i, v in enumerate(values))


@pytest.mark.parametrize("minutes", [5, 10, 15, 20, 30, 60])
def test_every_resolution_from_five_minutes_to_an_hour(tmp_path: Path, minutes: int):
    trace = read_trace(write(tmp_path, "time,value\n" + rows(minutes, [100, 200, 300, 400])))
    assert trace.step == timedelta(minutes=minutes) and trace.start == T0
    assert trace.values.tolist() == [100, 200, 300, 400] and trace.filled == 0
    assert trace.end == T0 + 4 * timedelta(minutes=minutes)


def test_odd_headers_comments_a_bom_and_extra_columns(tmp_path: Path):
    text = ("\ufeff# exported from somewhere\n"
            "Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct),Zone Id\n"
            "2026-03-10 00:00:00,210.5,DE\n2026-03-10 01:00:00,190,DE\n\n2026-03-10 02:00:00,180.25,DE\n")
    trace = read_trace(write(tmp_path, text))
    assert trace.values.tolist() == [210.5, 190.0, 180.25] and trace.step == timedelta(hours=1)


def test_no_header_offsets_and_naive_times(tmp_path: Path):
    trace = read_trace(write(tmp_path, "2026-03-10T01:00:00+01:00,10\n2026-03-10 00:30,20\n2026-03-10T01:00Z,30\n"))
    assert trace.start == T0 and trace.values.tolist() == [10, 20, 30]


def test_unix_seconds_and_milliseconds(tmp_path: Path):
    seconds = int(T0.timestamp())
    assert read_trace(write(tmp_path, f"t,v\n{seconds},1\n{seconds + 900},2\n")).step == timedelta(minutes=15)
    millis = read_trace(write(tmp_path, f"t,v\n{seconds * 1000},1\n{(seconds + 300) * 1000},2\n", "ms.csv"))
    assert millis.start == T0 and millis.step == timedelta(minutes=5)


def test_gzip_and_parquet(tmp_path: Path):
    gz = tmp_path / "grid.csv.gz"
    gz.write_bytes(gzip.compress(("when,g\n" + rows(30, [5, 6, 7])).encode()))
    assert read_trace(gz).values.tolist() == [5, 6, 7]
    parquet = tmp_path / "grid.parquet"
    pd.DataFrame({"ts": pd.date_range(T0, periods=3, freq="1h"), "ci": [1.0, 2.0, 3.0]}).to_parquet(parquet)
    trace = read_trace(parquet)
    assert trace.values.tolist() == [1, 2, 3] and trace.step == timedelta(hours=1) and trace.start == T0


def test_a_missing_row_holds_the_previous_value(tmp_path: Path):
    text = "t,v\n" + "".join(f"{(T0 + timedelta(hours=h)).isoformat()},{h}\n" for h in (0, 1, 2, 5, 6))
    trace = read_trace(write(tmp_path, text))
    assert trace.step == timedelta(hours=1), "the most common gap, not the median nor the first"
    assert trace.values.tolist() == [0, 1, 2, 2, 2, 5, 6] and trace.filled == 2


def test_the_shipped_traces_read():
    windy = read_trace(WINDY_GRID)
    assert (len(windy), windy.step, windy.start) == (364 * 24, timedelta(hours=1), datetime(2026, 1, 5, tzinfo=UTC))
    diurnal = read_trace(DIURNAL_GRID)
    assert diurnal.step == timedelta(minutes=30) and len(diurnal) == 364 * 48


def test_resampling_keeps_the_step_function():
    trace = read_trace(WINDY_GRID)
    fine = trace.resampled(timedelta(minutes=5))
    assert len(fine) == 12 * len(trace) and fine.steps().mean(T0, T0 + timedelta(hours=5)) == pytest.approx(
        trace.steps().mean(T0, T0 + timedelta(hours=5)))
    with pytest.raises(ValueError, match="divides 1h"):
        trace.resampled(timedelta(minutes=7))


@pytest.mark.parametrize(("text", "message"), [
    ("t,v\n2026-03-10T00:00Z,100\n2026-03-10T01:00Z,abc\n", "grid.csv, line 3: intensity 'abc' is not a number (gCO2/kWh)"),
    ("t,v\n2026-03-10T00:00Z,100\n2026-03-10T01:00Z,-5\n", "line 3: intensity '-5' is not a finite, non-negative number"),
    ("t,v\n2026-03-10T00:00Z,100\n2026-03-10T01:00Z,nan\n", "line 3: intensity 'nan' is not a finite"),
    ("t,v\n2026-03-10T00:00Z,100\n2026-03-10T01:00Z,\n", "line 3: the intensity is missing"),
    ("t,v\n2026-03-10T00:00Z,100\nsoon,100\n", "line 3: timestamp 'soon' is not an ISO 8601 time"),
    ("t,v\n2026-03-10T01:00Z,100\n2026-03-10T00:00Z,100\n", "line 3: timestamp 2026-03-10T00:00:00+00:00 is before line 2's"),
    ("t,v\n2026-03-10T00:00Z,100\n2026-03-10T00:00Z,100\n", "line 3: timestamp 2026-03-10T00:00:00+00:00 duplicates"),
    ("t,v\n2026-03-10T00:00Z,1\n2026-03-10T00:01Z,2\n2026-03-10T00:02Z,3\n", "the resolution (the most common gap "
                                                                          "between rows) is 1m"),
    ("t,v\n2026-03-10T00:00Z,1\n2026-03-10T02:00Z,2\n2026-03-10T04:00Z,3\n", "resolution (the most common gap "
                                                                          "between rows) is 2h"),
    ("t,v\n2026-03-10T00:00Z,1\n2026-03-10T00:07Z,2\n2026-03-10T00:14Z,3\n", "is 7m; a trace's resolution must"),
    ("t,v\n2026-03-10T00:00Z,1\n2026-03-10T01:00Z,2\n2026-03-10T01:20Z,3\n2026-03-10T02:00Z,4\n",
     "line 4: timestamp 2026-03-10T01:20:00+00:00 is off the trace's 1h grid"),
    ("t,v\n2026-03-10T00:00Z,1\n2026-03-10T01:00Z,2\n2026-03-10T09:00Z,3\n2026-03-10T10:00Z,4\n",
     "line 4: a gap of 8h after line 3 (2026-03-10T01:00:00+00:00), longer than 6h"),
    ("t,v\n2026-03-10T00:00Z,1\n", "a trace needs at least two rows, found 1"),
    ("t,v\n2026-03-10T00:00Z\n", "line 2: expected a timestamp and a value, found 1 column"),
])
def test_bad_traces_name_the_file_the_row_and_the_value(tmp_path: Path, text: str, message: str):
    with pytest.raises(DataSourceError) as caught:
        read_trace(write(tmp_path, text))
    assert str(tmp_path / "grid.csv") in str(caught.value) and message in str(caught.value)


def test_bad_parquet_rows_are_named_by_their_number(tmp_path: Path):
    parquet = tmp_path / "grid.parquet"
    pd.DataFrame({"ts": pd.date_range(T0, periods=3, freq="1h"), "ci": [1.0, np.inf, 3.0]}).to_parquet(parquet)
    with pytest.raises(DataSourceError, match="grid.parquet, row 2: intensity inf is not a finite"):
        read_trace(parquet)
    pd.DataFrame({"ts": pd.date_range(T0, periods=3, freq="1h"), "ci": [1.0, None, 3.0]}).to_parquet(parquet)
    with pytest.raises(DataSourceError, match="grid.parquet, row 2: the intensity is missing"):
        read_trace(parquet)


def test_prices_may_be_negative_when_allowed(tmp_path: Path):
    path = write(tmp_path, "t,eur\n" + rows(60, [40, -5, 30]))
    assert read_trace(path, what="price", allow_negative=True).values.tolist() == [40, -5, 30]
    with pytest.raises(DataSourceError, match="price '-5' is not a finite, non-negative number"):
        read_trace(path, what="price")


@pytest.mark.parametrize(("name", "message"), [
    ("grid.txt", "unknown format; a trace is .csv, .csv.gz or .parquet"),
    ("missing.csv", "cannot read the trace"),
])
def test_unreadable_files(tmp_path: Path, name: str, message: str):
    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text("x")
    with pytest.raises(DataSourceError, match=message):
        read_trace(path)


def test_a_corrupt_gzip_file(tmp_path: Path):
    path = tmp_path / "grid.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataSourceError, match="grid.csv.gz: cannot read the trace: Not a gzipped file"):
        read_trace(path)
