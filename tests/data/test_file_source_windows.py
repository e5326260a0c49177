"""FileSource reads half-open UTC windows from Parquet and CSV files, directories and globs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mape.config import FileSourceConfig
from mape.data import FileSource, open_source
from mape.errors import DataSourceError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def frame(start: int, stop: int, **extra: list) -> pd.DataFrame:
    """Rows with ids start..stop-1 at T0 + id minutes."""
    ids = list(range(start, stop))
    data = {"id": ids, "timestamp": [T0 + timedelta(minutes=i) for i in ids], "x": [float(i) for i in ids]}
    data.update(extra)
    return pd.DataFrame(data)


def test_parquet_window_is_half_open_utc_and_sorted(tmp_path):
    rows = frame(0, 20).sample(frac=1.0, random_state=3)  # stored out of order
    rows.to_parquet(tmp_path / "log.parquet")
    source = FileSource(tmp_path / "log.parquet", kind="parquet")

    got = source.read(T0 + timedelta(minutes=5), T0 + timedelta(minutes=10))

    assert got["id"].tolist() == [5, 6, 7, 8, 9]
    assert str(got["timestamp"].dt.tz) == "UTC"
    assert got["timestamp"].iloc[0] == T0 + timedelta(minutes=5)


def test_requested_columns_come_back_with_the_timestamp_first(tmp_path):
    frame(0, 5, c=list("abcab")).to_parquet(tmp_path / "log.parquet")
    source = FileSource(tmp_path / "log.parquet", kind="parquet")

    got = source.read(T0, T0 + timedelta(hours=1), columns=["c", "id"])

    assert list(got.columns) == ["timestamp", "c", "id"]
    assert got["c"].tolist() == list("abcab")


def test_directory_is_read_recursively_skipping_hidden_and_underscore_files(tmp_path):
    (tmp_path / "day=1").mkdir()
    (tmp_path / "_tmp").mkdir()
    frame(0, 3).to_parquet(tmp_path / "a.parquet")
    frame(3, 6).to_parquet(tmp_path / "day=1" / "b.parquet")
    frame(100, 103).to_parquet(tmp_path / "_tmp" / "partial.parquet")
    frame(200, 203).to_parquet(tmp_path / ".hidden.parquet")
    (tmp_path / "notes.csv").write_text("id,timestamp\n999,2026-01-05T00:00:00Z\n")

    got = FileSource(tmp_path, kind="parquet").read(T0, T0 + timedelta(days=1))

    assert got["id"].tolist() == [0, 1, 2, 3, 4, 5]


def test_glob_matches_files_recursively(tmp_path):
    (tmp_path / "2026" / "01").mkdir(parents=True)
    frame(0, 2).to_csv(tmp_path / "2026" / "01" / "a.csv", index=False)
    frame(2, 4).to_csv(tmp_path / "2026" / "b.csv", index=False)
    frame(4, 6).to_csv(tmp_path / "other.txt", index=False)

    got = FileSource(str(tmp_path / "**" / "*.csv"), kind="csv").read(T0, T0 + timedelta(days=1))

    assert got["id"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_no_matching_files_give_an_empty_frame_with_the_requested_columns(tmp_path, kind):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    for path in (empty_dir, tmp_path / f"nothing-*.{kind}"):
        got = FileSource(path, kind=kind).read(T0, T0 + timedelta(hours=1), columns=["id", "x"])
        assert got.empty
        assert list(got.columns) == ["timestamp", "id", "x"]


def test_a_path_that_does_not_exist_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataSourceError, match="missing.parquet does not exist"):
        FileSource(tmp_path / "missing.parquet", kind="parquet").read(T0, T0 + timedelta(hours=1))


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_missing_column_names_the_source_and_the_column(tmp_path, kind):
    path = tmp_path / f"log.{kind}"
    rows = frame(0, 3)
    rows.to_parquet(path) if kind == "parquet" else rows.to_csv(path, index=False)

    with pytest.raises(DataSourceError) as caught:
        FileSource(path, kind=kind).read(T0, T0 + timedelta(hours=1), columns=["id", "model_version"])

    assert str(path) in str(caught.value)
    assert "'model_version'" in str(caught.value)


def test_csv_offsets_are_converted_to_utc_and_naive_times_are_utc(tmp_path):
    (tmp_path / "log.csv").write_text(
        "id,timestamp,x\n"
        "1,2026-01-05T02:30:00+02:00,1.0\n"  # 00:30 UTC
        "2,2026-01-05T00:10:00Z,2.0\n"
        "3,2026-01-05T01:30:00+02:00,3.0\n"  # 23:30 UTC the day before: outside
    )
    (tmp_path / "naive.csv").write_text("id,timestamp,x\n4,2026-01-05 00:20:00,4.0\n")

    got = FileSource(tmp_path, kind="csv").read(T0, T0 + timedelta(hours=1))

    assert got["id"].tolist() == [2, 4, 1]
    assert got["timestamp"].tolist() == [T0 + timedelta(minutes=m) for m in (10, 20, 30)]


def test_naive_parquet_timestamps_are_utc(tmp_path):
    rows = frame(0, 10)
    rows["timestamp"] = rows["timestamp"].dt.tz_localize(None)
    rows.to_parquet(tmp_path / "naive.parquet")

    got = FileSource(tmp_path, kind="parquet").read(T0 + timedelta(minutes=2), T0 + timedelta(minutes=4))

    assert got["id"].tolist() == [2, 3]
    assert got["timestamp"].iloc[0] == T0 + timedelta(minutes=2)


def test_string_timestamps_in_parquet_are_filtered_after_reading(tmp_path):
    rows = frame(0, 10)
    rows["timestamp"] = rows["timestamp"].map(lambda t: t.isoformat())
    rows.to_parquet(tmp_path / "text.parquet")

    got = FileSource(tmp_path, kind="parquet").read(T0 + timedelta(minutes=8), T0 + timedelta(hours=1))

    assert got["id"].tolist() == [8, 9]


def test_a_column_added_in_later_files_reads_as_missing_in_older_ones(tmp_path):
    frame(0, 2).to_parquet(tmp_path / "a.parquet")
    frame(2, 4, model_version=[2, 2]).to_parquet(tmp_path / "b.parquet")

    got = FileSource(tmp_path, kind="parquet").read(T0, T0 + timedelta(hours=1), columns=["id", "model_version"])

    assert got["model_version"].isna().tolist() == [True, True, False, False]


def test_nanosecond_timestamps_are_filtered_on_the_scan(tmp_path):
    stamps = pa.array([int((T0 + timedelta(minutes=i)).timestamp() * 1e9) for i in range(5)], pa.timestamp("ns", "UTC"))
    pq.write_table(pa.table({"id": list(range(5)), "timestamp": stamps}), tmp_path / "ns.parquet")

    got = FileSource(tmp_path, kind="parquet").read(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))

    assert got["id"].tolist() == [1, 2]


def test_open_source_builds_a_file_source_from_configuration(tmp_path):
    frame(0, 3).rename(columns={"id": "request_id", "timestamp": "ts"}).to_csv(tmp_path / "l.csv", index=False)
    cfg = FileSourceConfig(kind="csv", path=str(tmp_path / "l.csv"), timestamp_column="ts", id_column="request_id")

    source = open_source(cfg)
    got = source.read(T0, T0 + timedelta(hours=1), columns=[source.id_column])

    assert isinstance(source, FileSource)
    assert list(got.columns) == ["ts", "request_id"]
    assert got["request_id"].tolist() == [0, 1, 2]
