"""CachedWindow answers reads inside a window already read as the source would, and passes the others to it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from mape.data import CachedWindow, FileSource
from mape.errors import DataSourceError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


class CountingSource(FileSource):
    """The real FileSource, counting the reads that reach it."""

    reads = 0

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        self.reads += 1
        return super().read(start, end, columns)


def write_log(path, kind: str = "parquet") -> None:
    rows = pd.DataFrame({"id": range(60), "timestamp": [T0 + timedelta(minutes=m) for m in range(60)],
                         "x": [float(m) for m in range(60)], "prediction": [m % 2 for m in range(60)]})
    rows.to_parquet(path) if kind == "parquet" else rows.to_csv(path, index=False)


@pytest.mark.parametrize("window", [(0, 60), (10, 50), (10, 60), (0, 20)])
@pytest.mark.parametrize("columns", [None, ["prediction", "id"], ["timestamp", "x"]])
def test_a_read_inside_the_window_is_what_the_source_returns_without_reading_it(tmp_path, window, columns):
    write_log(tmp_path / "log.parquet")
    source = CountingSource(tmp_path / "log.parquet", kind="parquet")
    cached = CachedWindow(source, source.read(T0, T0 + timedelta(hours=1)), T0, T0 + timedelta(hours=1))
    start, end = (T0 + timedelta(minutes=m) for m in window)

    got = cached.read(start, end, columns)

    pd.testing.assert_frame_equal(got, source.read(start, end, columns))
    assert source.reads == 2  # the window, then the comparison: the cached read did not reach the source


def test_a_read_outside_the_window_goes_to_the_source(tmp_path):
    write_log(tmp_path / "log.parquet")
    source = CountingSource(tmp_path / "log.parquet", kind="parquet")
    cached = CachedWindow(source, source.read(T0 + timedelta(minutes=30), T0 + timedelta(hours=1)),
                          T0 + timedelta(minutes=30), T0 + timedelta(hours=1))

    got = cached.read(T0, T0 + timedelta(hours=1), columns=["id"])

    assert got["id"].tolist() == list(range(60))
    assert source.reads == 2


def test_a_missing_column_is_the_sources_error(tmp_path):
    write_log(tmp_path / "log.parquet")
    source = FileSource(tmp_path / "log.parquet", kind="parquet")
    cached = CachedWindow(source, source.read(T0, T0 + timedelta(hours=1)), T0, T0 + timedelta(hours=1))

    with pytest.raises(DataSourceError) as caught:
        cached.read(T0, T0 + timedelta(minutes=5), columns=["id", "model_version"])

    assert str(caught.value) == f"parquet source {tmp_path / 'log.parquet'} has no column 'model_version'"


def test_csv_sources_are_always_read_a_file_lacking_a_column_is_an_error_there(tmp_path):
    write_log(tmp_path / "log.csv", kind="csv")
    source = CountingSource(tmp_path / "log.csv", kind="csv")
    cached = CachedWindow(source, source.read(T0, T0 + timedelta(hours=1)), T0, T0 + timedelta(hours=1))

    cached.read(T0, T0 + timedelta(minutes=5), columns=["id"])

    assert source.reads == 2


def test_a_returned_frame_is_the_callers_to_change(tmp_path):
    write_log(tmp_path / "log.parquet")
    source = FileSource(tmp_path / "log.parquet", kind="parquet")
    cached = CachedWindow(source, source.read(T0, T0 + timedelta(hours=1)), T0, T0 + timedelta(hours=1))

    got = cached.read(T0, T0 + timedelta(hours=1))
    got["x"] = 0.0

    assert cached.read(T0, T0 + timedelta(hours=1))["x"].sum() == sum(range(60))
