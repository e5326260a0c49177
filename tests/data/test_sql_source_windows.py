"""SqlSource reads half-open UTC windows from a table, on SQLite files and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from knowledge.database import normalise_url
from mape.config import SqlSourceConfig
from mape.data import SqlSource, open_source
from mape.errors import DataSourceError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "id": list(range(n)),
        "timestamp": [T0 + timedelta(minutes=i) for i in range(n)],
        "x": [i / 2 for i in range(n)],
        "c": [("a", "b")[i % 2] for i in range(n)],
    })


def write_table(url: str, name: str, frame: pd.DataFrame, *, schema: str | None = None) -> None:
    engine = sa.create_engine(normalise_url(url))
    with engine.begin() as connection:
        if schema is not None and engine.dialect.name == "postgresql":
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        frame.sample(frac=1.0, random_state=1).to_sql(name, connection, schema=schema, index=False)
    engine.dispose()


def test_window_is_half_open_utc_and_sorted_on_both_backends(db_url):
    write_table(db_url, "predictions", rows(30))
    source = SqlSource(db_url, "predictions")

    got = source.read(T0 + timedelta(minutes=10), T0 + timedelta(minutes=15), columns=["id", "c"])
    source.dispose()

    assert list(got.columns) == ["timestamp", "id", "c"]
    assert got["id"].tolist() == [10, 11, 12, 13, 14]
    assert got["timestamp"].tolist() == [T0 + timedelta(minutes=m) for m in range(10, 15)]
    assert str(got["timestamp"].dt.tz) == "UTC"


def test_schema_qualified_table(db_url):
    schema = "logs" if db_url.startswith("postgresql") else "main"
    write_table(db_url, "predictions", rows(5), schema=schema)
    source = SqlSource(db_url, f"{schema}.predictions")

    got = source.read(T0, T0 + timedelta(hours=1))
    source.dispose()

    assert got["id"].tolist() == [0, 1, 2, 3, 4]
    assert {"timestamp", "id", "x", "c"} == set(got.columns)


def test_missing_column_and_missing_table_name_the_table(db_url):
    write_table(db_url, "predictions", rows(3))
    source = SqlSource(db_url, "predictions")

    with pytest.raises(DataSourceError, match=r"SQL table predictions at .* has no column 'label'"):
        source.read(T0, T0 + timedelta(hours=1), columns=["id", "label"])
    with pytest.raises(DataSourceError, match=r"SQL table nowhere at .* does not exist"):
        SqlSource(db_url, "nowhere").read(T0, T0 + timedelta(hours=1))
    source.dispose()


def test_a_column_added_after_the_first_read_is_found(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    write_table(url, "predictions", rows(3))
    source = SqlSource(url, "predictions")
    assert len(source.read(T0, T0 + timedelta(hours=1))) == 3

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE predictions ADD COLUMN model_version INTEGER"))
        connection.execute(sa.text("UPDATE predictions SET model_version = 7"))
    engine.dispose()

    got = source.read(T0, T0 + timedelta(hours=1), columns=["model_version"])
    assert got["model_version"].tolist() == [7, 7, 7]


def test_a_sqlite_file_that_does_not_exist_is_an_error_and_is_not_created(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(DataSourceError, match="does not exist"):
        SqlSource(f"sqlite:///{path}", "predictions").read(T0, T0 + timedelta(hours=1))
    assert not Path(path).exists()


def test_open_source_builds_a_sql_source_from_configuration(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    write_table(url, "events", rows(4).rename(columns={"timestamp": "ts", "id": "event_id"}))

    source = open_source(SqlSourceConfig(kind="sql", url=url, table="events", timestamp_column="ts",
                                         id_column="event_id"))
    got = source.read(T0 + timedelta(minutes=2), T0 + timedelta(hours=1), columns=["event_id"])

    assert isinstance(source, SqlSource)
    assert got["event_id"].tolist() == [2, 3]
