"""What a directory read needs of each Parquet file: its footer parsed once, its rows of a window, as one schema.

Who calls it: :class:`mape.data.sources.FileSource`, which reads a directory
of files (an inference log written a part every few minutes) through these
steps. A file's footer (its schema, its row groups' statistics) is parsed
once per identity stamp (:func:`mape.data.table_cache.stamp_of`) and kept as a
:class:`FileInfo`: listing the window's files, unifying their schemas and
skipping the ones outside the window then cost no parsing while nothing
changes. Times are compared as integers in the timestamp column's unit
("ticks"); naive stored times are UTC.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mape.data.table_cache import Stamp

#: The least and greatest time of a file's rows, as ticks of ``unit``: (low, high, unit); (0, -1, unit) when empty.
Span = tuple[int, int, str]


@dataclass(frozen=True)
class FileInfo:
    """A Parquet file's footer as it was at ``stamp``.

    Attributes
    ----------
    stamp : Stamp
        The file's identity stamp when the footer was parsed.
    metadata : pyarrow.parquet.FileMetaData
        The parsed footer (handed to :class:`pyarrow.parquet.ParquetFile` so it is not parsed again).
    schema : pyarrow.Schema
        The file's Arrow schema, as :func:`pyarrow.parquet.read_schema` gives it.
    span : Span or None
        The time span of the timestamp column from the row groups' statistics;
        None when the column is not a timestamp or a row group lacks them.
    """

    stamp: Stamp
    metadata: pq.FileMetaData
    schema: pa.Schema
    span: Span | None

    @property
    def decoded_bytes(self) -> int:
        """About the memory the file takes decoded: its row groups' uncompressed size."""
        return sum(self.metadata.row_group(i).total_byte_size for i in range(self.metadata.num_row_groups))


def read_footer(source: str | os.PathLike[str] | BinaryIO, stamp: Stamp, timestamp_column: str) -> FileInfo:
    """Parse the footer of the file at ``source`` (a path or an open binary file), whose stamp is ``stamp``."""
    metadata = pq.ParquetFile(source).metadata
    return FileInfo(stamp, metadata, metadata.schema.to_arrow_schema(), time_span(metadata, timestamp_column))


def time_span(metadata: pq.FileMetaData, column: str) -> Span | None:
    """The least and greatest time in a file's ``column`` (as integers in its unit, and the unit), from the footer.

    None when a row group lacks the statistics (the file must then be read).
    """
    schema = metadata.schema.to_arrow_schema()
    position = schema.get_field_index(column)
    if position < 0 or not pa.types.is_timestamp(schema.field(position).type):
        return None
    unit = schema.field(position).type.unit
    leaf = next((i for i in range(metadata.num_columns) if metadata.schema.column(i).path == column), None)
    if leaf is None:
        return None
    lows, highs = [], []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(leaf).statistics
        if metadata.row_group(i).num_rows == 0:
            continue
        if stats is None or not stats.has_min_max or stats.physical_type != "INT64":
            return None
        lows.append(int(stats.min_raw))
        highs.append(int(stats.max_raw))
    if not lows:
        return 0, -1, unit  # no rows: holds no window
    return min(lows), max(highs), unit


def holds(span: Span | None, low: int, high: int) -> str:
    """What a span says of a file's rows in ``[low, high)`` (ticks of the span's unit): none, some or all.

    >>> holds((10, 20, "us"), 0, 10), holds((10, 20, "us"), 0, 21), holds((10, 20, "us"), 15, 30), holds(None, 0, 1)
    ('none', 'all', 'some', 'some')
    """
    if span is None:
        return "some"
    first, last, _ = span
    if last < low or first >= high:
        return "none"
    return "all" if low <= first and last < high else "some"


def unified(schemas: list[pa.Schema], previous: pa.Schema | None) -> pa.Schema:
    """The schemas unified (a column some lack is nullable in the others), without metadata.

    ``previous`` is the last result: when every schema has its columns and
    types (the usual case, a part like the ones before), it is the answer and
    nothing is unified again.
    """
    if previous is not None and all(s.equals(previous) for s in schemas):
        return previous
    return pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as ``schema``: its columns in that order and type, a column it lacks as nulls."""
    present = table.schema
    if present.names == schema.names and present.types == schema.types:
        return table
    if set(schema.names) <= set(present.names):
        chosen = table.select(schema.names)
        if chosen.schema.types == schema.types:
            return chosen.replace_schema_metadata(None)
    arrays = []
    for field in schema:
        if present.get_field_index(field.name) < 0:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def rows_between(table: pa.Table, column: str, low: int, high: int, *, keep_nulls: bool = True) -> pa.Table:
    """The rows with ``low <= column < high`` (ticks of the column's unit) when it is an Arrow timestamp; else all.

    Rows sorted by time, as logs usually are, are sliced without a copy. A
    null time is outside every window; with ``keep_nulls`` (the default) a
    table holding one is returned whole, for the caller's own window step to
    drop it.
    """
    values = table.column(column)
    if not pa.types.is_timestamp(values.type) or (keep_nulls and values.null_count):
        return table
    if values.num_chunks == 1 and not values.null_count:
        ticks = values.chunk(0).to_numpy().view(np.int64)
    else:  # a null reads as NaT, the least integer: outside the window
        ticks = np.asarray(values.to_numpy()).view(np.int64)
    if ticks.size and bool((ticks[1:] >= ticks[:-1]).all()):
        first, last = np.searchsorted(ticks, [low, high])
        return table.slice(int(first), int(last - first))
    return table.filter(pa.array((ticks >= low) & (ticks < high)))


def to_pandas(table: pa.Table, column: str) -> pd.DataFrame:
    """The table as a frame, an Arrow timestamp ``column`` as aware UTC (``datetime.timezone.utc``)."""
    position = table.schema.get_field_index(column)
    if position >= 0 and pa.types.is_timestamp(table.schema.field(position).type):
        utc = pa.timestamp(table.schema.field(position).type.unit, tz="+00:00")  # naive stored times are UTC
        table = table.set_column(position, pa.field(column, utc), table.column(position).cast(utc))
    return table.to_pandas(use_threads=False)
