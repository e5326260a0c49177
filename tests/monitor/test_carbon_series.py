"""SeriesProvider on real CSV and Parquet files, and the shipped synthetic trace."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from examples.carbon import DIURNAL_GRID
from mape.errors import DataSourceError
from mape.monitor.carbon.provider import IntensityProvider
from mape.monitor.carbon.series import SeriesProvider
from mape.monitor.carbon.synthetic import diurnal_trace, main, write_csv

UTC = timezone.utc


def at(hour: int, minute: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def write(tmp_path: Path, text: str, name: str = "grid.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_current_is_the_value_of_the_step_containing_the_time(tmp_path: Path):
    grid = SeriesProvider(write(tmp_path, "when,gco2\n2026-03-10T12:00:00Z,200\n2026-03-10T12:30:00Z,150.5\n"
                                          "2026-03-10T13:00:00Z,300\n"))
    assert isinstance(grid, IntensityProvider)
    assert grid.current(at(12)).g_per_kwh == 200.0
    assert grid.current(at(12, 29)).g_per_kwh == 200.0
    assert grid.current(at(12, 30)).g_per_kwh == 150.5
    point = grid.current(at(13, 29))
    assert (point.time, point.g_per_kwh, point.source) == (at(13), 300.0, "series:grid.csv")
    assert grid.current(at(11, 59)) is None, "before the series"
    assert grid.current(at(13, 30)) is None, "after the last step (one median gap long)"


def test_forecast_is_the_series_itself_over_the_window(tmp_path: Path):
    rows = "".join(f"2026-03-10T{h:02d}:00:00Z,{100 + h}\n" for h in range(24))
    grid = SeriesProvider(write(tmp_path, "t,v\n" + rows))
    window = grid.forecast(at(5, 30), at(9))
    assert [(p.time.hour, p.g_per_kwh) for p in window] == [(5, 105.0), (6, 106.0), (7, 107.0), (8, 108.0)]
    assert grid.forecast(at(9), at(9)) == []
    assert grid.forecast(at(0, day=11), at(3, day=11)) == []
    assert [p.time.hour for p in grid.forecast(at(22), at(5, day=11))] == [22, 23]


def test_timestamps_with_offsets_naive_ones_and_no_header(tmp_path: Path):
    grid = SeriesProvider(write(tmp_path, "2026-03-10T13:00:00+01:00,10\n2026-03-10 12:05,20\n"
                                          "2026-03-10T12:10:00.000Z,30\n"))
    assert [p.time for p in grid.points] == [at(12), at(12, 5), at(12, 10)]
    assert grid.step == timedelta(minutes=5)
    assert grid.current(datetime(2026, 3, 10, 12, 7)).g_per_kwh == 20.0, "a naive query time is UTC"


def test_hourly_parquet_with_timestamp_and_float_columns(tmp_path: Path):
    frame = pd.DataFrame({"ts": pd.date_range("2026-03-10", periods=6, freq="h", tz="Europe/Berlin"),
                          "intensity": [300.0, 280.5, 250.0, 240.0, 260.0, 310.0], "ignored": list("abcdef")})
    path = tmp_path / "grid.parquet"
    frame.to_parquet(path)
    grid = SeriesProvider(path)
    assert grid.start == datetime(2026, 3, 9, 23, tzinfo=UTC)
    assert grid.step == timedelta(hours=1)
    assert grid.current(datetime(2026, 3, 10, 0, 30, tzinfo=UTC)).g_per_kwh == 280.5


def test_naive_parquet_timestamps_are_utc(tmp_path: Path):
    path = tmp_path / "grid.parquet"
    pd.DataFrame({"t": pd.date_range("2026-03-10", periods=3, freq="5min"), "g": [1, 2, 3]}).to_parquet(path)
    assert SeriesProvider(path).start == datetime(2026, 3, 10, tzinfo=UTC)


@pytest.mark.parametrize(("text", "message"), [
    ("t,v\n2026-03-10T12:00Z,200\n2026-03-10T12:30Z,abc\n", r"grid.csv, line 3: intensity 'abc' is not a number"),
    ("t,v\n2026-03-10T12:00Z,200\n2026-03-10T12:30Z,\n", r"grid.csv, line 3: the intensity is missing"),
    ("t,v\n2026-03-10T12:00Z,200\n2026-03-10T12:30Z,-1\n", r"line 3: intensity '-1' is not a finite, non-negative"),
    ("t,v\n2026-03-10T12:00Z,200\n2026-03-10T12:30Z,nan\n", r"line 3: intensity 'nan' is not a finite"),
    ("t,v\n2026-03-10T12:00Z,200\nyesterday,100\n", r"grid.csv, line 3: timestamp 'yesterday' is not an ISO 8601"),
    ("t,v\n2026-03-10T12:30Z,200\n2026-03-10T12:00Z,100\n",
     r"line 3: timestamp 2026-03-10T12:00:00\+00:00 is before line 2's .* sorted by time without duplicates"),
    ("t,v\n2026-03-10T12:00Z,200\n2026-03-10T13:00+01:00,100\n",
     r"line 3: timestamp 2026-03-10T12:00:00\+00:00 duplicates line 2's"),
    ("t,v\n2026-03-10T12:00Z,200\n2026-03-10T12:30Z\n", r"line 3: expected a timestamp and an intensity"),
    ("t,v\n2026-03-10T12:00Z,200\n", r"needs at least two rows, found 1"),
])
def test_bad_rows_are_named_with_file_and_line(tmp_path: Path, text: str, message: str):
    with pytest.raises(DataSourceError, match=message) as caught:
        SeriesProvider(write(tmp_path, text))
    assert str(tmp_path / "grid.csv") in str(caught.value)


def test_bad_parquet_rows_are_named_by_row(tmp_path: Path):
    path = tmp_path / "grid.parquet"
    pd.DataFrame({"t": ["2026-03-10T12:00Z", "2026-03-10T12:30Z", "2026-03-10T12:30Z"],
                  "g": [1.0, 2.0, 3.0]}).to_parquet(path)
    with pytest.raises(DataSourceError, match=r"grid.parquet, row 3: timestamp .* duplicates row 2's"):
        SeriesProvider(path)


def test_unreadable_files(tmp_path: Path):
    with pytest.raises(DataSourceError, match=r"missing.csv: cannot read the carbon intensity series"):
        SeriesProvider(tmp_path / "missing.csv")
    with pytest.raises(DataSourceError, match=r"not-parquet.parquet: cannot read"):
        SeriesProvider(write(tmp_path, "2026-03-10T12:00Z,1\n", "not-parquet.parquet"))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataSourceError, match=r"binary.csv: not a readable CSV file"):
        SeriesProvider(tmp_path / "binary.csv")
    with pytest.raises(DataSourceError, match=r"grid.json: unknown format '.json'"):
        SeriesProvider(write(tmp_path, "{}", "grid.json"))


def test_repeat_continues_the_series_outside_its_span(tmp_path: Path):
    rows = "".join(f"2026-03-10T{h:02d}:00:00Z,{100 + h}\n" for h in range(24))
    grid = SeriesProvider(write(tmp_path, rows), repeat=True)
    point = grid.current(at(5, 30, day=12))
    assert (point.time, point.g_per_kwh) == (at(5, day=12), 105.0)
    assert grid.current(at(23, 59, day=9)).g_per_kwh == 123.0
    window = grid.forecast(at(22, 30), at(2, day=11))
    assert [(p.time, p.g_per_kwh) for p in window] == [(at(22), 122.0), (at(23), 123.0), (at(0, day=11), 100.0),
                                                       (at(1, day=11), 101.0)]


# --------------------------------------------------------------------------- the shipped trace


def test_the_shipped_trace_is_small_and_covers_52_weeks_at_30_minutes():
    assert DIURNAL_GRID.stat().st_size < 1_000_000
    grid = SeriesProvider(DIURNAL_GRID)
    assert grid.step == timedelta(minutes=30)
    assert grid.start == datetime(2026, 1, 5, tzinfo=UTC) and grid.start.weekday() == 0
    assert grid.end - grid.start == timedelta(weeks=52)


def test_the_shipped_trace_has_a_midday_dip_an_evening_peak_and_quiet_weekends():
    frame = pd.read_csv(DIURNAL_GRID, parse_dates=["time"])
    by_hour = frame.groupby(frame.time.dt.hour).g_co2_per_kwh.mean()
    assert by_hour.idxmin() in (11, 12, 13, 14) and by_hour.idxmax() in (17, 18, 19, 20)
    assert by_hour[18] - by_hour[12] > 100
    weekday = frame.time.dt.day_of_week
    assert frame[weekday >= 5].g_co2_per_kwh.mean() < frame[weekday < 5].g_co2_per_kwh.mean() - 25
    summer, winter = frame[frame.time.dt.month == 7], frame[frame.time.dt.month == 1]
    assert summer.g_co2_per_kwh.mean() < winter.g_co2_per_kwh.mean()
    assert frame.g_co2_per_kwh.min() >= 25


def test_the_generator_reproduces_the_shipped_file_byte_for_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    main([str(tmp_path / "again.csv")])
    assert "17472 rows" in capsys.readouterr().out
    assert (tmp_path / "again.csv").read_bytes() == DIURNAL_GRID.read_bytes()


def test_the_generator_is_seeded_and_takes_other_resolutions(tmp_path: Path):
    five_minutes = diurnal_trace(days=2, step=timedelta(minutes=5), seed=7)
    assert len(five_minutes) == 576 and five_minutes == diurnal_trace(days=2, step=timedelta(minutes=5), seed=7)
    assert five_minutes != diurnal_trace(days=2, step=timedelta(minutes=5), seed=8)
    grid = SeriesProvider(write_csv(five_minutes, tmp_path / "five.csv"))
    assert grid.step == timedelta(minutes=5) and len(grid.points) == 576
