"""A FileSource kept across ticks reads what the files hold now: a file rewritten or added is read again."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mape.data import FileSource

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def rows(start: int, stop: int, **extra: list) -> pd.DataFrame:
    ids = list(range(start, stop))
    return pd.DataFrame({"id": ids, "timestamp": [T0 + timedelta(minutes=i) for i in ids], **extra})


def test_a_file_rewritten_between_reads_is_read_again(tmp_path):
    path = tmp_path / "log.parquet"
    rows(0, 10).to_parquet(path)
    source = FileSource(path, kind="parquet")
    assert source.read(T0, T0 + timedelta(hours=1))["id"].tolist() == list(range(10))

    rows(0, 20, x=[1.5] * 20).to_parquet(path)  # more rows and a new column: another footer
    os.utime(path, ns=(1, 1))  # even with an older modification time

    got = source.read(T0, T0 + timedelta(hours=1))
    assert got["id"].tolist() == list(range(20))
    assert list(got.columns) == ["id", "timestamp", "x"]


def test_a_file_added_to_a_directory_is_read_with_the_unified_schema(tmp_path):
    rows(0, 3).to_parquet(tmp_path / "a.parquet")
    source = FileSource(tmp_path, kind="parquet")
    assert source.read(T0, T0 + timedelta(hours=1))["id"].tolist() == [0, 1, 2]

    rows(3, 5, model_version=[2, 2]).to_parquet(tmp_path / "b.parquet")

    got = source.read(T0, T0 + timedelta(hours=1), columns=["id", "model_version"])
    assert got["model_version"].isna().tolist() == [True, True, True, False, False]


def test_an_unsorted_file_is_windowed_row_by_row(tmp_path):
    order = [5, 1, 9, 3, 7, 0, 8, 2, 6, 4]
    stamps = pa.array([(T0 + timedelta(seconds=i)).replace(tzinfo=None) for i in order], pa.timestamp("s"))
    pq.write_table(pa.table({"id": order, "timestamp": stamps}), tmp_path / "log.parquet")

    got = FileSource(tmp_path / "log.parquet", kind="parquet").read(T0 + timedelta(seconds=2.5),
                                                                    T0 + timedelta(seconds=7))

    assert got["id"].tolist() == [3, 4, 5, 6]
    assert got["timestamp"].dt.tz is timezone.utc
