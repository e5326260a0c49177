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
does any failure to read; nothing else escapes. :class:`CachedWindow` answers
reads inside a window already read from memory (the monitor reads a model's
current window once a tick for all its sensors).
"""

from __future__ import annotations

import glob
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
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
from mape.data.parquet_parts import FileInfo, conform, holds, read_footer, rows_between, to_pandas, unified
from mape.data.table_cache import Stamp, TableCache, stamp_of
from mape.data.window_memo import LastWindow, Part, extension, keepable, moved
from mape.errors import DataSourceError, InvalidParameterError

#: Whether pandas copies on write (always from pandas 3): only then may frames handed out share kept memory.
_COPY_ON_WRITE = int(pd.__version__.split(".")[0]) >= 3

#: Memory a file source may keep decoded Parquet files in (see :class:`FileSource`).
DEFAULT_CACHE_BYTES = 64 * 2**20

#: Column sets whose last window a file source keeps (a tick reads the log with all columns, the labels with three).
_WINDOWS_KEPT = 4

_GLOB_CHARACTERS = frozenset("*?[")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
    #: Whether a read of some columns is those columns of a read of all of them (:class:`CachedWindow` relies on it).
    _partial_reads_alike: bool = True

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
        wanted = self._wanted(columns)
        frame = self._read(start, end, wanted)
        return self._finish(frame, start, end, wanted)

    def _wanted(self, columns: Sequence[str] | None) -> list[str] | None:
        """The columns of a read in the order returned: the timestamp first, no repeats; None for all."""
        return None if columns is None else [
            self.timestamp_column, *(c for c in dict.fromkeys(columns) if c != self.timestamp_column)
        ]

    @abstractmethod
    def _read(self, start: datetime, end: datetime, columns: list[str] | None) -> pd.DataFrame:
        """Rows covering at least ``[start, end)`` with at least ``columns`` (all when None)."""

    def _finish(self, frame: pd.DataFrame, start: datetime, end: datetime, wanted: list[str] | None) -> pd.DataFrame:
        ts = self.timestamp_column
        if ts not in frame.columns:
            raise self._missing(ts)
        stamps = frame[ts]
        converted = not _is_utc(stamps.dtype)
        if converted:
            try:
                stamps = _to_utc(stamps)
            except (ValueError, TypeError) as exc:
                raise DataSourceError(f"{self.name}: column {ts!r} does not hold timestamps: {exc}") from None
        # each step copies every column, so it is skipped where it would change nothing (the usual case of a
        # scan that already applied the window to sorted rows); times are compared as integers in their unit
        ticks, unit = stamps.array.asi8, stamps.array.unit  # NaT is the least integer: outside every window
        low, high = _ticks(start, unit), _ticks(end, unit)
        ordered = bool((ticks[1:] >= ticks[:-1]).all())
        if ordered:
            first, last = (int(i) for i in np.searchsorted(ticks, [low, high]))
            if (first, last) != (0, len(ticks)):
                frame, stamps = frame.iloc[first:last], stamps.iloc[first:last]
        else:
            inside = (ticks >= low) & (ticks < high)
            if not inside.all():
                frame, stamps = frame.loc[inside], stamps[inside]
        if wanted is not None:
            frame = select(frame, wanted)
        if converted:
            frame = frame.assign(**{ts: stamps})
        if not ordered:
            frame = frame.sort_values(ts, kind="stable")
        return frame.reset_index(drop=True)

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


def select(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame[columns]``, taken by position where the names are unique (a selection by name costs more).

    >>> select(pd.DataFrame({"a": [1], "b": [2], "c": [3]}), ["c", "a"]).columns.tolist()
    ['c', 'a']
    """
    names = frame.columns.tolist()
    if names == columns:
        return frame
    position = {name: i for i, name in enumerate(names)}
    if len(position) < len(names) or not all(c in position for c in columns):
        return frame[columns]  # repeated names; or a missing one: the KeyError naming it
    return frame.take([position[c] for c in columns], axis=1)


def _is_utc(dtype: Any) -> bool:
    """Whether a column holds aware UTC times as :func:`_to_utc` gives them (nothing to convert)."""
    return isinstance(dtype, pd.DatetimeTZDtype) and dtype.tz is timezone.utc


#: Text timestamps that carry their own offset (``...12:00:00+02:00``, ``...12:00Z``); a bare date does not.
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"


def _to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as aware UTC; text in any ISO 8601 spelling (files may differ), else pandas' inference.

    Naive text is UTC. Text mixing values with and without offsets is parsed
    in two groups: pandas 2.x applies the previous value's offset to a naive
    one that follows it when parsing them together.
    """
    if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        try:
            text = values.astype("string")
            aware = text.str.contains(_OFFSET, regex=True, na=False).to_numpy()
            naive = ~aware & text.notna().to_numpy()
            if aware.any() and naive.any():
                parts = [pd.to_datetime(values[mask], utc=True, format="ISO8601") for mask in (aware, ~aware)]
                return pd.concat(parts).reindex(values.index)
            return pd.to_datetime(values, utc=True, format="ISO8601")
        except (ValueError, TypeError):
            pass  # mixed or non-ISO spellings: pandas infers each value below
    return pd.to_datetime(values, utc=True)


class CachedWindow(TableSource):
    """A window of a source read once with every column; reads inside it are answered from memory.

    Who calls it: the monitor, which reads a model's current window of the
    inference log once a tick (the drift and quality sensors need every column)
    and gives the performance sensor this view of the log, so the labelled
    window and the label-free estimate do not read the file again. A read
    inside ``[start, end)`` returns what the source would: the rows of its
    window, the columns asked for (one the source lacks raises the source's
    :class:`~mape.errors.DataSourceError`), sorted by time. Any other read, and
    every read of a source whose reads of some columns differ from the same
    columns of a full read (CSV files: a file lacking a column asked for is an
    error, not nulls), goes to the source.

    Parameters
    ----------
    source : TableSource
        The source the window was read from.
    frame : pandas.DataFrame
        ``source.read(start, end)``.
    start, end : datetime
        The window read.

    Examples
    --------
    >>> from datetime import timezone
    >>> t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> frame = pd.DataFrame({"timestamp": pd.date_range(t0, periods=4, freq="min"), "id": [1, 2, 3, 4]})
    >>> log = CachedWindow(FileSource("log.parquet", kind="parquet"), frame, t0, t0 + pd.Timedelta("4min"))
    >>> log.read(t0 + pd.Timedelta("1min"), t0 + pd.Timedelta("3min"), columns=["id"])["id"].tolist()
    [2, 3]
    """

    def __init__(self, source: TableSource, frame: pd.DataFrame, start: datetime, end: datetime) -> None:
        self.source = source
        self.frame = frame
        self.start, self.end = ensure_utc(start), ensure_utc(end)
        self.timestamp_column = source.timestamp_column
        self.id_column = source.id_column

    @property
    def name(self) -> str:
        return self.source.name

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        start, end = ensure_utc(start), ensure_utc(end)
        if not (self.source._partial_reads_alike and not self.frame.empty and self.start <= start
                and end <= self.end):  # an empty frame may lack columns a read of no rows still returns
            return self.source.read(start, end, columns)
        wanted = self._wanted(columns)
        self._check_columns(self.frame.columns.tolist(), wanted)
        times = self.frame[self.timestamp_column].array  # sorted UTC times, as every read returns them
        first, last = np.searchsorted(times.asi8, [_ticks(start, times.unit), _ticks(end, times.unit)])
        rows = self.frame.iloc[first:last] if first or last < len(times) else self.frame.copy(deep=False)
        if wanted is not None:
            rows = select(rows, wanted)
        return rows.reset_index(drop=True) if first else rows

    def _read(self, start: datetime, end: datetime, columns: list[str] | None) -> pd.DataFrame:
        return self.source._read(start, end, columns)


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
    cache_bytes : int, default 64 MiB
        Decoded Parquet files kept in memory while unchanged (see
        :mod:`mape.data.table_cache`); a file that does not fit is read each
        time. With a cache, a directory's files whose timestamp statistics
        lie outside the window are not read at all, and (with pandas 3,
        which copies on write) the last window read of each set of columns
        is kept too, within the same budget, and moved forward by the next
        read: only the files added or grown since are read (see
        :mod:`mape.data.window_memo`). 0 turns it off (every read scans the
        files with :mod:`pyarrow.dataset`).
    """

    def __init__(self, path: str | os.PathLike[str], *, kind: Literal["parquet", "csv"],
                 timestamp_column: str = "timestamp", id_column: str = "id",
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if kind not in ("parquet", "csv"):
            raise InvalidParameterError.for_parameter("kind", "FileSource", "one of 'parquet', 'csv'", kind)
        if cache_bytes < 0:
            raise InvalidParameterError.for_parameter("cache_bytes", "FileSource", "at least 0", cache_bytes)
        self.path = os.fspath(path)
        self.kind = kind
        self.timestamp_column = timestamp_column
        self.id_column = id_column
        # decoded Parquet files kept while unchanged (CSV is parsed again: pandas frames can be changed in place)
        self.cache = TableCache(cache_bytes) if kind == "parquet" and cache_bytes > 0 else None
        self._infos: dict[str, FileInfo] = {}  # each file's footer, parsed once per stamp
        self._schema: tuple[tuple[tuple[str, Stamp], ...], pa.Schema] | None = None  # unified, for these files
        # the last window of each column set a directory read returned, moved forward by the next read (only
        # where frames handed out cannot change the kept one)
        self._windows: OrderedDict[tuple[str, ...] | None, LastWindow] | None = (
            OrderedDict() if self.cache is not None and _COPY_ON_WRITE else None)
        self._partial_reads_alike = kind == "parquet"  # CSV: a file lacking a column asked for is an error
        #: Reads answered by moving the last window forward (reading only new or grown files).
        self.moved_windows = 0

    @property
    def name(self) -> str:
        return f"{self.kind} source {self.path}"

    def files(self) -> list[Path]:
        """The files this source reads now, sorted by path."""
        return [Path(name) for name in self._names()]

    def _names(self) -> list[str]:
        """The paths of the files this source reads now, sorted as paths sort (part by part)."""
        if os.path.isfile(self.path):
            return [self.path]
        if os.path.isdir(self.path):
            found: list[str] = []
            _walk(self.path, f".{self.kind}", found)
            return sorted(found, key=lambda f: f.split(os.sep))
        if _GLOB_CHARACTERS & set(self.path):
            return [str(p) for p in sorted(Path(p) for p in glob.glob(self.path, recursive=True) if Path(p).is_file())]
        raise DataSourceError(f"{self.name} does not exist")

    def read(self, start: datetime, end: datetime, columns: Sequence[str] | None = None) -> pd.DataFrame:
        if self._windows is None:
            return super().read(start, end, columns)
        start, end = ensure_utc(start), ensure_utc(end)
        wanted = self._wanted(columns)
        files = self._names()
        if len(files) < 2:
            return self._finish(self._read_listed(files, start, end, wanted), start, end, wanted)
        listing = self._listing(files)
        schema = self._unified_schema(listing)
        self._check_columns(schema.names, wanted or [self.timestamp_column])
        kind = schema.field(self.timestamp_column).type
        if not pa.types.is_timestamp(kind):
            return self._finish(self._read_parquet_files(listing, schema, start, end, wanted), start, end, wanted)
        key = None if wanted is None else tuple(wanted)
        unit = kind.unit
        low, high = _ticks(start, unit), _ticks(end, unit)
        parts = [Part(path, info.stamp, info.span) for path, info in listing]
        target = pa.schema([schema.field(c) for c in (wanted or schema.names)])
        frame, row_bytes = None, None
        last = self._windows.pop(key, None)
        if last is not None:
            reads = extension(last, parts, target, unit, low, high)
            if reads is not None:
                frame = moved(last, self.timestamp_column, low, self._rows_of(reads, target, high, files))
                if frame is not None:
                    row_bytes = last.row_bytes
                    self.moved_windows += 1
        if frame is None:
            frame = self._finish(self._read_parquet_files(listing, schema, start, end, wanted), start, end, wanted)
            if keepable(frame, target):
                row_bytes = frame.memory_usage(index=False, deep=False).sum() / max(len(frame), 1)
        if row_bytes is not None:
            self._windows[key] = LastWindow(low, high, unit, target, {part.path: part for part in parts}, frame,
                                            float(row_bytes))
            budget = self.cache.budget_bytes if self.cache is not None else 0
            while self._windows and (len(self._windows) > _WINDOWS_KEPT
                                     or sum(w.nbytes for w in self._windows.values()) > budget):
                self._windows.popitem(last=False)  # the least recently read first
        return frame.copy(deep=False)  # a caller changing its frame's columns changes its own copy

    def _read(self, start: datetime, end: datetime, columns: list[str] | None) -> pd.DataFrame:
        return self._read_listed(self._names(), start, end, columns)

    def _read_listed(self, files: list[str], start: datetime, end: datetime,
                     columns: list[str] | None) -> pd.DataFrame:
        if not files:
            return self._empty(columns)
        if self.kind == "csv":
            return self._read_csv(files, columns)
        if len(files) == 1:
            return self._read_parquet_file(files[0], start, end, columns)
        listing = self._listing(files)
        schema = self._unified_schema(listing)
        self._check_columns(schema.names, columns or [self.timestamp_column])
        if self.cache is not None:
            return self._read_parquet_files(listing, schema, start, end, columns)
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
        return to_pandas(table, self.timestamp_column)

    def _read_parquet_file(self, file: str, start: datetime, end: datetime,
                           columns: list[str] | None) -> pd.DataFrame:
        """One file, read directly (a dataset's scan costs more than the decoding of a window-sized file)."""
        table = self._file_table(file, columns)
        if _COPY_ON_WRITE and self.cache is not None and pa.types.is_timestamp(
                table.schema.field(self.timestamp_column).type):
            # a kept file's frame, converted once: the window, the columns and the order are applied by _finish
            # on a copy-on-write view (a caller changing it changes its own copy)
            frame = self.cache.frame(str(file), table)
            if frame is None and self.cache.holds(str(file), table):
                frame = to_pandas(table, self.timestamp_column)
                if not self.cache.attach(str(file), table, frame):
                    frame = None
            if frame is not None:
                return frame
        if columns is not None and table.column_names != columns:
            table = table.select(columns)  # in the order asked for (cheaper here than in pandas)
        unit = _unit(table.schema, self.timestamp_column)
        if unit is not None:
            table = rows_between(table, self.timestamp_column, _ticks(start, unit), _ticks(end, unit))
        return to_pandas(table, self.timestamp_column)

    def _listing(self, files: list[str]) -> list[tuple[str, FileInfo]]:
        """Each file with its footer as it is now (parsed again only for a new or changed file)."""
        listing = []
        file = None
        try:
            for name in files:
                file = name
                stamp = stamp_of(os.stat(name))
                info = self._infos.get(name)
                if info is None or info.stamp != stamp:
                    info = read_footer(name, stamp, self.timestamp_column)
                    self._infos[name] = info
                listing.append((name, info))
        except (pa.ArrowException, OSError) as exc:
            raise DataSourceError(f"{self.name} cannot be read ({file}): {exc}") from None
        if len(self._infos) > len(listing):  # files removed since (a rotated log): their footers and tables go
            self._infos = dict(listing)
            if self.cache is not None:
                self.cache.keep_only(self._infos)
        return listing

    def _file_table(self, file: Path | str, columns: list[str] | None, *, keep: Sequence[str] = (),
                    partial: bool = False) -> pa.Table:
        """One file's rows: every column from the cache (read whole and kept when it fits), else ``columns``.

        ``keep`` names the other files of the read, which keeping this one must
        not evict; with ``partial``, a column the file lacks is left out (the
        unified schema fills it) instead of being an error.
        """
        whole = False
        name = str(file)
        try:
            with open(name, "rb") as handle:
                stamp = stamp_of(os.fstat(handle.fileno()))  # of the file opened, so the footer used is the one read
                table = None if self.cache is None else self.cache.get(name, stamp)
                if table is not None:
                    if not partial:
                        self._check_columns(table.column_names, columns or [self.timestamp_column])
                    return table
                info = self._infos.get(name)
                if info is None or info.stamp != stamp:  # the footer is parsed again only when the file changed
                    info = read_footer(handle, stamp, self.timestamp_column)
                    self._infos[name] = info
                parquet = pq.ParquetFile(handle, metadata=info.metadata)
                names = info.schema.names
                if partial and columns is not None:
                    columns = [c for c in columns if c in set(names)]
                self._check_columns(names, columns or [self.timestamp_column])
                whole = self.cache is not None and self.cache.fits(info.decoded_bytes)
                table = parquet.read(columns=None if whole else columns, use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise DataSourceError(f"{self.name} cannot be read ({file}): {exc}") from None
        # as the dataset reads it: the schema's pandas metadata (index, dtypes) is not applied
        table = table.replace_schema_metadata(None)
        if whole:
            assert self.cache is not None
            self.cache.put(name, stamp, table, keep=keep)
        return table

    def _read_parquet_files(self, listing: list[tuple[str, FileInfo]], schema: pa.Schema, start: datetime,
                            end: datetime, columns: list[str] | None) -> pd.DataFrame:
        """Several files through the cache: those that may hold the window, windowed, as the unified schema."""
        names = [name for name, _ in listing]
        target = pa.schema([schema.field(c) for c in (columns or schema.names)])
        unit = _unit(schema, self.timestamp_column)
        low, high = (0, 0) if unit is None else (_ticks(start, unit), _ticks(end, unit))
        parts = []
        for name, info in listing:
            held = "some" if unit is None else holds(info.span, low, high)
            if held == "none":
                continue
            table = self._file_table(name, target.names, keep=names, partial=True)
            try:
                if held != "all" and unit is not None:
                    table = rows_between(table, self.timestamp_column, low, high)
                parts.append(conform(table, target))
            except (pa.ArrowException, OSError) as exc:
                raise DataSourceError(f"{self.name} cannot be read ({name}): {exc}") from None
        return to_pandas(pa.concat_tables(parts) if parts else target.empty_table(), self.timestamp_column)

    def _rows_of(self, reads: list[tuple[Part, int]], target: pa.Schema, high: int,
                 names: list[str]) -> pd.DataFrame | None:
        """The rows of ``reads`` (each file from its tick up to ``high``) as one frame of ``target``; None if none.

        ``names`` are the files of the read (keeping one of these must not evict another).
        """
        tables = []
        for part, low in reads:
            table = self._file_table(part.path, target.names, keep=names, partial=True)
            try:
                tables.append(conform(rows_between(table, self.timestamp_column, low, high, keep_nulls=False),
                                      target))
            except (pa.ArrowException, OSError) as exc:
                raise DataSourceError(f"{self.name} cannot be read ({part.path}): {exc}") from None
        if not tables:
            return None
        return to_pandas(pa.concat_tables(tables), self.timestamp_column)

    def _unified_schema(self, listing: list[tuple[str, FileInfo]]) -> pa.Schema:
        """The files' schemas unified, kept while no file changes."""
        key = tuple((name, info.stamp) for name, info in listing)
        if self._schema is not None and self._schema[0] == key:
            return self._schema[1]
        try:
            schema = unified([info.schema for _, info in listing], None if self._schema is None else self._schema[1])
        except (pa.ArrowException, OSError) as exc:
            raise DataSourceError(f"{self.name} cannot be read: {exc}") from None
        self._schema = (key, schema)
        return schema

    def _read_csv(self, files: list[str], columns: list[str] | None) -> pd.DataFrame:
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


def _unit(schema: pa.Schema, column: str) -> str | None:
    """The unit of ``column`` when it is an Arrow timestamp in ``schema``; else None."""
    position = schema.get_field_index(column)
    if position < 0 or not pa.types.is_timestamp(schema.field(position).type):
        return None
    return str(schema.field(position).type.unit)


def _walk(directory: str, suffix: str, found: list[str]) -> None:
    """Add the files below ``directory`` named ``*suffix`` to ``found``, skipping names that start with . or _."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name[:1] in (".", "_"):
                continue
            if entry.is_dir():
                _walk(entry.path, suffix, found)
            elif entry.name.endswith(suffix) and entry.is_file():
                found.append(entry.path)


_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_INT64 = (-(2**63), 2**63 - 1)


def _ticks(moment: datetime, unit: str) -> int:
    """``moment`` in ``unit`` since the epoch, rounded up (so ``moment <= t`` iff the result ``<= t``), within int64."""
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds
    ticks = -(-micros * _PER_SECOND[unit] // 10**6)
    return min(max(ticks, _INT64[0]), _INT64[1])


def floor_ticks(moment: datetime, unit: str) -> int:
    """``moment`` in ``unit`` since the epoch, rounded down (so ``t <= moment`` iff ``t <=`` the result), within int64.

    >>> floor_ticks(datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=timezone.utc), "s")
    1
    """
    delta = ensure_utc(moment) - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds
    return min(max(micros * _PER_SECOND[unit] // 10**6, _INT64[0]), _INT64[1])


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
        return FileSource(cfg.path, kind=cfg.kind, timestamp_column=cfg.timestamp_column, id_column=cfg.id_column,
                          cache_bytes=int(cfg.cache_mb * 2**20))
    if isinstance(cfg, SqlSourceConfig):
        return SqlSource(cfg.url, cfg.table, timestamp_column=cfg.timestamp_column, id_column=cfg.id_column)
    raise InvalidParameterError.for_parameter("cfg", "open_source", "a FileSourceConfig or SqlSourceConfig", cfg)
