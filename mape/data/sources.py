"""Read a time window of rows from Parquet files, CSV files or a SQL table.

Who calls it: the monitor (drift reference and current windows, through
:func:`mape.data.labelled.labelled_window` for performance) and the execute
stage (training data). The controller builds sources from configuration with
:func:`open_source`.

Every source answers the same question, :meth:`TableSource.read`: the rows
whose timestamp lies in ``[start, end)``, with the timestamp column converted
to timezone-aware UTC (naive stored times are taken to be UTC) and sorted by
it. A configured column that the data lacks raises
:class:`~mape.errors.DataSourceError` naming the source and the column, and so
does any failure to read; nothing else escapes.
"""

from __future__ import annotations

import glob
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError

from knowledge.database import normalise_url
from mape._util.timeutil import ensure_utc
from mape.config import FileSourceConfig, SqlSourceConfig
from mape.errors import DataSourceError, InvalidParameterError

_GLOB_CHARACTERS = frozenset("*?[")


class TableSource(ABC):
    """Rows with an event time and an id, read one half-open time window at a time.

    Subclasses implement :meth:`_read`, which may return extra rows and
    columns; :meth:`read` applies the window, the column selection, the UTC
    conversion and the ordering, so every source behaves the same.

    Attributes
    ----------
    timestamp_column : str
        Column holding the event time of each row.
    id_column : str
        Column holding the row's unique id (joins predictions to labels).
    """

    timestamp_column: str
    id_column: str

    @property
    @abstractmethod
    def name(self) -> str:
        """The source in words, for messages: its kind and its path or table."""

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows with ``start <= timestamp < end``, sorted by timestamp.

        Parameters
        ----------
        start, end : datetime
            The window; naive values are taken to be UTC.
        columns : sequence of str, optional
            Columns to return (the timestamp column is always returned, first).
            All columns when omitted.

        Raises
        ------
        DataSourceError
            A requested column is missing, or the source cannot be read.
        """
        start, end = ensure_utc(start), ensure_utc(end)
        wanted = None if columns is None else [
            self.timestamp_column, *(c for c in dict.fromkeys(columns) if c != self.timestamp_column)
        ]
        frame = self._read(start, end, wanted)
        return self._finish(frame, start, end, wanted)

    @abstractmethod
    def _read(self, start: datetime, end: datetime, columns: list[str] | None) -> pd.DataFrame:
        """Rows covering at least ``[start, end)`` with at least ``columns`` (all when None)."""

    def _finish(self, frame: pd.DataFrame, start: datetime, end: datetime, wanted: list[str] | None) -> pd.DataFrame:
        ts = self.timestamp_column
        if ts not in frame.columns:
            raise self._missing(ts)
        try:
            stamps = _to_utc(frame[ts])
        except (ValueError, TypeError) as exc:
            raise DataSourceError(f"{self.name}: column {ts!r} does not hold timestamps: {exc}") from None
        inside = ((stamps >= start) & (stamps < end)).to_numpy()
        frame = frame.loc[inside] if wanted is None else frame.loc[inside, wanted]
        frame = frame.assign(**{ts: stamps[inside]})
        return frame.sort_values(ts, kind="stable").reset_index(drop=True)

    def _missing(self, column: str) -> DataSourceError:
        return DataSourceError(f"{self.name} has no column {column!r}")

    def _check_columns(self, available: Sequence[str], wanted: Sequence[str] | None) -> None:
        present = set(available)
        for column in wanted or ():
            if column not in present:
                raise self._missing(column)

    def _empty(self, wanted: list[str] | None) -> pd.DataFrame:
        columns = wanted or [self.timestamp_column]
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]" if c == self.timestamp_column else object)
                             for c in columns})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as aware UTC; text in any ISO 8601 spelling (files may differ), else pandas' inference."""
    if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        try:
            return pd.to_datetime(values, utc=True, format="ISO8601")
        except (ValueError, TypeError):
            pass  # mixed or non-ISO spellings: pandas infers each value below
    return pd.to_datetime(values, utc=True)


class FileSource(TableSource):
    """Rows in Parquet or CSV files: one file, a directory of files (recursively), or a glob.

    A directory contributes every ``*.parquet`` (or ``*.csv``) file below it,
    skipping names that start with ``.`` or ``_`` (as Arrow does). No matching
    file gives an empty frame; a path that does not exist and is not a glob is
    an error. Parquet files are read with :mod:`pyarrow.dataset`, their schemas
    unified (a column added later reads as null in older files) and the time
    window pushed down to the file scan when the timestamp column has a
    timestamp type.

    Parameters
    ----------
    path : str or os.PathLike
        File, directory or glob pattern (``**`` matches directories recursively).
    kind : {"parquet", "csv"}
        The file format.
    timestamp_column, id_column : str
        See :class:`TableSource`.
    """

    def __init__(self, path: str | os.PathLike[str], *, kind: Literal["parquet", "csv"],
                 timestamp_column: str = "timestamp", id_column: str = "id") -> None:
        if kind not in ("parquet", "csv"):
            raise InvalidParameterError.for_parameter("kind", "FileSource", "one of 'parquet', 'csv'", kind)
        self.path = os.fspath(path)
        self.kind = kind
        self.timestamp_column = timestamp_column
        self.id_column = id_column

    @property
    def name(self) -> str:
        return f"{self.kind} source {self.path}"

    def files(self) -> list[Path]:
        """The files this source reads now, sorted by path."""
        path = Path(self.path)
        if path.is_file():
            return [path]
        if path.is_dir():
            return sorted(
                p for p in path.rglob(f"*.{self.kind}")
                if p.is_file() and not any(part[:1] in (".", "_") for part in p.relative_to(path).parts)
            )
        if _GLOB_CHARACTERS & set(self.path):
            return sorted(Path(p) for p in glob.glob(self.path, recursive=True) if Path(p).is_file())
        raise DataSourceError(f"{self.name} does not exist")

    def _read(self, start: datetime, end: datetime, columns: list[str] | None) -> pd.DataFrame:
        files = self.files()
        if not files:
            return self._empty(columns)
        if self.kind == "parquet":
            return self._read_parquet(files, start, end, columns)
        return self._read_csv(files, columns)

    def _read_parquet(self, files: list[Path], start: datetime, end: datetime,
                      columns: list[str] | None) -> pd.DataFrame:
        try:
            schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
        except (pa.ArrowException, OSError) as exc:
            raise DataSourceError(f"{self.name} cannot be read: {exc}") from None
        schema = schema.remove_metadata()
        self._check_columns(schema.names, columns or [self.timestamp_column])
        dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        window = _arrow_window(self.timestamp_column, schema.field(self.timestamp_column).type, start, end)
        try:
            try:
                table = dataset.to_table(columns=columns, filter=window)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                if window is None:
                    raise
                table = dataset.to_table(columns=columns)  # the window is applied after reading
        except (pa.ArrowException, OSError) as exc:
            raise DataSourceError(f"{self.name} cannot be read: {exc}") from None
        return table.to_pandas()

    def _read_csv(self, files: list[Path], columns: list[str] | None) -> pd.DataFrame:
        wanted = None if columns is None else set(columns)
        frames = []
        for file in files:
            try:
                frame = pd.read_csv(file, usecols=None if wanted is None else (lambda c: c in wanted))
            except pd.errors.EmptyDataError:
                continue  # a file just created, nothing written yet
            except (OSError, ValueError) as exc:
                raise DataSourceError(f"{self.name} cannot be read ({file}): {exc}") from None
            for column in columns or [self.timestamp_column]:
                if column not in frame.columns:
                    raise DataSourceError(f"{self.name} has no column {column!r} (in {file})")
            frames.append(frame)
        if not frames:
            return self._empty(columns)
        return pd.concat(frames, ignore_index=True)


def _arrow_window(column: str, type_: pa.DataType, start: datetime, end: datetime) -> ds.Expression | None:
    """A scan filter for ``start <= column < end``, or None when the column is not an Arrow timestamp."""
    if not pa.types.is_timestamp(type_):
        return None
    if type_.tz is None:  # naive stored times are UTC
        bounds = pa.scalar(start.replace(tzinfo=None)), pa.scalar(end.replace(tzinfo=None))
    else:
        bounds = (pa.scalar(start, type=pa.timestamp("us", tz=type_.tz)),
                  pa.scalar(end, type=pa.timestamp("us", tz=type_.tz)))
    field = ds.field(column)
    return (field >= bounds[0]) & (field < bounds[1])


class SqlSource(TableSource):
    """Rows in a table of any SQLAlchemy-reachable database.

    The engine is created once per source object (call :meth:`dispose` to
    release its connections); the table is reflected on first use and again
    when a requested column is not found. When the timestamp column has a SQL
    date-time type the window is a ``WHERE`` clause (naive columns are
    compared in UTC); otherwise rows are filtered after reading.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host/db``.
    table : str
        Table name, optionally schema-qualified (``schema.table``).
    timestamp_column, id_column : str
        See :class:`TableSource`.
    """

    def __init__(self, url: str, table: str, *, timestamp_column: str = "timestamp", id_column: str = "id") -> None:
        self.url = url
        self.table = table
        self.timestamp_column = timestamp_column
        self.id_column = id_column
        try:
            self._engine: Engine = sa.create_engine(normalise_url(url))
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise DataSourceError(f"SQL table {table}: cannot use the database URL: {exc}") from None
        self._table: sa.Table | None = None

    @property
    def name(self) -> str:
        return f"SQL table {self.table} at {self._engine.url.render_as_string(hide_password=True)}"

    def dispose(self) -> None:
        """Close the pooled connections of this source's engine."""
        self._engine.dispose()

    def _reflect(self, columns: list[str] | None) -> sa.Table:
        if self._table is not None and all(c in self._table.c for c in columns or ()):
            return self._table
        url = self._engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
                and not Path(url.database).exists():
            raise DataSourceError(f"{self.name} does not exist: no database file")
        schema, _, name = self.table.rpartition(".")
        try:
            self._table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=self._engine)
        except NoSuchTableError:
            raise DataSourceError(f"{self.name} does not exist") from None
        except SQLAlchemyError as exc:
            raise DataSourceError(f"{self.name} cannot be read: {exc}") from None
        return self._table

    def _read(self, start: datetime, end: datetime, columns: list[str] | None) -> pd.DataFrame:
        table = self._reflect(columns)
        self._check_columns(list(table.c.keys()), columns or [self.timestamp_column])
        stamp = table.c[self.timestamp_column]
        query = sa.select(*([table.c[c] for c in columns] if columns else table.c))
        if isinstance(stamp.type, sa.DateTime):
            low: Any = start if stamp.type.timezone else start.replace(tzinfo=None)
            high: Any = end if stamp.type.timezone else end.replace(tzinfo=None)
            query = query.where(stamp >= low, stamp < high)
        try:
            with self._engine.connect() as connection:
                result = connection.execute(query.order_by(stamp))
                return pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()))
        except SQLAlchemyError as exc:
            raise DataSourceError(f"{self.name} cannot be read: {exc}") from None


def open_source(cfg: FileSourceConfig | SqlSourceConfig) -> TableSource:
    """The source a configuration describes.

    >>> open_source(FileSourceConfig(kind="csv", path="/data/labels", id_column="request_id"))
    FileSource('csv source /data/labels')
    """
    if isinstance(cfg, FileSourceConfig):
        return FileSource(cfg.path, kind=cfg.kind, timestamp_column=cfg.timestamp_column, id_column=cfg.id_column)
    if isinstance(cfg, SqlSourceConfig):
        return SqlSource(cfg.url, cfg.table, timestamp_column=cfg.timestamp_column, id_column=cfg.id_column)
    raise InvalidParameterError.for_parameter("cfg", "open_source", "a FileSourceConfig or SqlSourceConfig", cfg)
