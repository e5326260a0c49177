"""A directory read moves the last window forward: only new or grown files are read, and the rows are exactly a fresh read's."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mape.data import FileSource
from mape.data.sources import _COPY_ON_WRITE
from mape.errors import DataSourceError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)

pytestmark = pytest.mark.skipif(not _COPY_ON_WRITE, reason="windows are kept only where pandas copies on write")


def part(i: int, rows: int = 12, *, minutes: int = 5, **extra: object) -> pd.DataFrame:
    """Rows of the ``i``-th five-minute part (ids unique across parts)."""
    step = timedelta(minutes=minutes) / max(rows, 1)
    return pd.DataFrame({"id": np.arange(i * 1000, i * 1000 + rows),
                         "timestamp": pd.Series([T0 + i * timedelta(minutes=minutes) + k * step for k in range(rows)],
                                                dtype="datetime64[us, UTC]"),
                         "x": np.arange(rows, dtype=float) + i, **extra})


def write(directory, name: str, frame: pd.DataFrame) -> None:
    frame.to_parquet(directory / f"{name}.parquet", index=False)


def fresh(directory, start: datetime, end: datetime, columns=None) -> pd.DataFrame:
    """What a new source (no window kept yet) reads."""
    return FileSource(directory, kind="parquet").read(start, end, columns)


def test_a_moving_window_reads_only_the_part_that_arrived(tmp_path):
    for i in range(12):
        write(tmp_path, f"part-{i:02d}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    source.read(T0, T0 + timedelta(hours=1))
    assert source.cache is not None
    misses = source.cache.misses

    write(tmp_path, "part-12", part(12))
    got = source.read(T0 + timedelta(minutes=5), T0 + timedelta(minutes=65))

    assert source.moved_windows == 1
    assert source.cache.misses == misses + 1  # the new part, nothing else
    pd.testing.assert_frame_equal(got, fresh(tmp_path, T0 + timedelta(minutes=5), T0 + timedelta(minutes=65)))
    assert got["id"].iloc[0] == 1000 and got["id"].iloc[-1] == 12011


def test_a_window_that_ended_inside_a_file_gets_the_rest_of_its_rows_when_it_moves_on(tmp_path):
    for i in range(3):
        write(tmp_path, f"part-{i}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    source.read(T0, T0 + timedelta(minutes=12))  # ends inside part-2, which is unchanged afterwards

    got = source.read(T0 + timedelta(minutes=1), T0 + timedelta(minutes=20))

    assert source.moved_windows == 1
    assert got["id"].iloc[-1] == 2011
    pd.testing.assert_frame_equal(got, fresh(tmp_path, T0 + timedelta(minutes=1), T0 + timedelta(minutes=20)))


def test_the_same_window_again_is_answered_without_reading_any_file(tmp_path):
    for i in range(3):
        write(tmp_path, f"part-{i}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    first = source.read(T0, T0 + timedelta(minutes=15), columns=["id"])
    assert source.cache is not None
    hits, misses = source.cache.hits, source.cache.misses

    again = source.read(T0, T0 + timedelta(minutes=15), columns=["id"])

    assert (source.cache.hits, source.cache.misses) == (hits, misses)
    pd.testing.assert_frame_equal(again, first)


def test_a_rewritten_file_still_inside_the_window_is_read_again(tmp_path):
    for i in range(3):
        write(tmp_path, f"part-{i}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    source.read(T0, T0 + timedelta(minutes=15))
    changed = part(1)
    changed["x"] += 100.0
    changed = changed.iloc[:-1]  # another size too: the rewrite is seen whatever the clock
    write(tmp_path, "part-1", changed)

    got = source.read(T0, T0 + timedelta(minutes=16))

    pd.testing.assert_frame_equal(got, fresh(tmp_path, T0, T0 + timedelta(minutes=16)))
    assert got["x"].max() >= 100.0


def test_a_removed_file_with_rows_in_the_window_takes_them_away(tmp_path):
    for i in range(3):
        write(tmp_path, f"part-{i}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    source.read(T0, T0 + timedelta(minutes=15))
    os.remove(tmp_path / "part-1.parquet")

    got = source.read(T0, T0 + timedelta(minutes=15))

    assert not ((got["id"] >= 1000) & (got["id"] < 2000)).any()
    pd.testing.assert_frame_equal(got, fresh(tmp_path, T0, T0 + timedelta(minutes=15)))


def test_a_removed_file_older_than_the_window_keeps_the_window_moving(tmp_path):
    for i in range(4):
        write(tmp_path, f"part-{i}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    source.read(T0, T0 + timedelta(minutes=20))
    os.remove(tmp_path / "part-0.parquet")  # retention: the oldest part goes
    write(tmp_path, "part-4", part(4))

    got = source.read(T0 + timedelta(minutes=5), T0 + timedelta(minutes=25))

    assert source.moved_windows == 1
    pd.testing.assert_frame_equal(got, fresh(tmp_path, T0 + timedelta(minutes=5), T0 + timedelta(minutes=25)))


def test_changing_a_returned_frame_does_not_change_the_next_read(tmp_path):
    for i in range(3):
        write(tmp_path, f"part-{i}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    first = source.read(T0, T0 + timedelta(minutes=15))
    first["x"] = -1.0
    first.loc[0, "id"] = -7

    again = source.read(T0, T0 + timedelta(minutes=15))

    assert (again["x"] >= 0).all() and again["id"].iloc[0] == 0


def test_an_integer_column_with_a_null_reads_as_a_fresh_read_does_before_and_after_the_null_leaves(tmp_path):
    with_null = part(0)
    with_null["n"] = pd.array([None, *range(1, 12)], dtype="Int64")
    write(tmp_path, "part-0", with_null)
    for i in (1, 2):
        write(tmp_path, f"part-{i}", part(i, n=np.arange(12)))
    source = FileSource(tmp_path, kind="parquet")

    for start in (T0, T0 + timedelta(minutes=5)):  # with the null (floats), then without it (integers)
        end = start + timedelta(minutes=10)
        pd.testing.assert_frame_equal(source.read(start, end), fresh(tmp_path, start, end))
    assert source.read(T0 + timedelta(minutes=5), T0 + timedelta(minutes=15))["n"].dtype == np.int64


def test_parts_that_tie_or_overlap_the_kept_rows_give_the_order_a_fresh_read_gives(tmp_path):
    write(tmp_path, "b", part(0))
    source = FileSource(tmp_path, kind="parquet")
    source.read(T0, T0 + timedelta(minutes=10))
    tie = part(0).iloc[[3, 7]].assign(id=[-1, -2])  # same times as kept rows, from a file sorted before them
    write(tmp_path, "a", tie)

    got = source.read(T0, T0 + timedelta(minutes=10))

    pd.testing.assert_frame_equal(got, fresh(tmp_path, T0, T0 + timedelta(minutes=10)))
    assert source.moved_windows == 0  # the order is the read's stable sort, not an append


def test_no_window_is_kept_beyond_the_budget(tmp_path):
    for i in range(3):
        write(tmp_path, f"part-{i}", part(i, rows=1000))
    source = FileSource(tmp_path, kind="parquet", cache_bytes=40_000)  # a file fits (24 kB), a 3,000-row window does not
    source.read(T0, T0 + timedelta(minutes=15))
    write(tmp_path, "part-3", part(3, rows=1000))

    got = source.read(T0 + timedelta(minutes=5), T0 + timedelta(minutes=20))

    assert source.moved_windows == 0
    pd.testing.assert_frame_equal(got, fresh(tmp_path, T0 + timedelta(minutes=5), T0 + timedelta(minutes=20)))


@pytest.mark.parametrize("seed", range(16))
def test_moved_windows_equal_fresh_reads_as_a_directory_evolves(tmp_path, seed):
    """Parts arrive (sorted or not, some late, some with a new column or a null), old ones go, one is rewritten."""
    rng = np.random.default_rng(seed)
    source = FileSource(tmp_path, kind="parquet")
    written: list[int] = []
    start = T0
    columns_choice = [None, ["id", "x"], ["id"], ["x", "id"]]
    for step in range(14):
        action = rng.uniform()
        if action < 0.55 or not written:  # the next part arrives (now and then one out of order, or late)
            i = len(written) if rng.uniform() < 0.85 or not written else int(rng.integers(0, len(written) + 1))
            frame = part(i + 100 * step, rows=int(rng.integers(0, 15)))
            frame["timestamp"] = pd.Series([T0 + i * timedelta(minutes=5) + k * timedelta(seconds=17)
                                            for k in range(len(frame))], dtype="datetime64[us, UTC]")
            if rng.uniform() < 0.2:
                frame = frame.sample(frac=1.0, random_state=seed)
            if rng.uniform() < 0.2:
                frame["v"] = rng.integers(0, 3, size=len(frame))  # a column the others lack
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if len(frame) and rng.uniform() < 0.15:
                stamps = table.column("timestamp").to_pylist()
                stamps[0] = None
                table = table.set_column(1, "timestamp", pa.array(stamps, table.schema.field(1).type))
            pq.write_table(table, tmp_path / f"p{step:02d}.parquet", row_group_size=int(rng.integers(3, 20)))
            written.append(step)
        elif action < 0.7:  # retention takes the oldest file
            os.remove(tmp_path / f"p{written.pop(0):02d}.parquet")
        elif action < 0.8:  # a file is rewritten with other values
            name = tmp_path / f"p{written[int(rng.integers(0, len(written)))]:02d}.parquet"
            table = pq.read_table(name)
            x = table.column("x").to_numpy(zero_copy_only=False) + 1000.0
            pq.write_table(table.set_column(table.schema.get_field_index("x"), "x", pa.array(x)), name)
        start += timedelta(minutes=int(rng.integers(-2, 8)))  # now and then the window moves back
        end = start + timedelta(minutes=int(rng.integers(5, 40)))
        columns = columns_choice[int(rng.integers(0, len(columns_choice)))]
        want = fresh(tmp_path, start, end, columns)
        pd.testing.assert_frame_equal(source.read(start, end, columns), want)
    assert source.moved_windows > 0


def test_a_column_missing_from_every_file_is_still_an_error_naming_it(tmp_path):
    for i in range(2):
        write(tmp_path, f"part-{i}", part(i))
    source = FileSource(tmp_path, kind="parquet")
    source.read(T0, T0 + timedelta(minutes=10))
    with pytest.raises(DataSourceError, match="'label'"):
        source.read(T0, T0 + timedelta(minutes=10), columns=["label"])
