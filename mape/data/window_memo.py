"""The last window a directory read returned, and what must be read to move it forward.

Who calls it: :class:`mape.data.sources.FileSource`. A controller reads the
last hour of a log every few minutes while a logging job adds a part file
every few minutes: from one read to the next, the window's rows are the last
window's, less those now too old, plus the rows of the parts that arrived.
:func:`extension` says which files must be read, and from what time, for the
new window to be exactly the last one moved forward; it says None whenever
that cannot be known (a file changed or vanished while it still had rows in
the window, a file without time statistics, the window moved back, the schema
changed), and the caller reads the window whole.

The kept window is a pandas frame handed out only where pandas copies on
write. It is kept only while its columns' types do not depend on its rows:
no dictionary (categorical) column, and no integer or boolean column that
holds a null (Arrow converts those to float and object columns, while the
same rows without the null convert to integers or booleans).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from mape.data.parquet_parts import Span
from mape.data.table_cache import Stamp


@dataclass(frozen=True)
class Part:
    """A file of the directory as listed for one read: its path, stamp and time span (None: unknown)."""

    path: str
    stamp: Stamp
    span: Span | None


@dataclass(frozen=True)
class LastWindow:
    """The rows of ``[low, high)`` (ticks of ``unit``) with the columns of ``schema``, read from ``parts``.

    ``frame`` is what the read returned: sorted by time, window applied,
    timestamps aware UTC, a fresh range index; ``row_bytes`` is the memory
    a row of it takes (measured once, when the window was read whole).
    """

    low: int
    high: int
    unit: str
    schema: pa.Schema
    parts: dict[str, Part]
    frame: pd.DataFrame
    row_bytes: float

    @property
    def nbytes(self) -> int:
        """About the memory of the kept frame: its rows times the bytes of a row (object columns at their pointers)."""
        return int(self.frame.shape[0] * self.row_bytes)


def extension(last: LastWindow, parts: list[Part], schema: pa.Schema, unit: str, low: int,
              high: int) -> list[tuple[Part, int]] | None:
    """The files to read, each with the tick to read it from (up to ``high``), to move ``last`` to ``[low, high)``.

    None when the new window cannot be built from the last one: the window
    moved back or the schema changed, a file of the last window changed or
    vanished while it may still hold rows in the new window, or a file
    lacks time statistics.

    Examples
    --------
    >>> t = (1, 1, 1, 1)
    >>> old = Part("a", t, (0, 9, "us"))
    >>> last = LastWindow(0, 10, "us", pa.schema([]), {"a": old}, pd.DataFrame(), 0.0)
    >>> extension(last, [old, Part("b", t, (10, 19, "us"))], pa.schema([]), "us", 5, 20)
    [(Part(path='b', stamp=(1, 1, 1, 1), span=(10, 19, 'us')), 5)]
    >>> extension(last, [Part("b", t, (10, 19, "us"))], pa.schema([]), "us", 5, 20) is None  # a vanished
    True
    """
    if unit != last.unit or low < last.low or high < last.high or not schema.equals(last.schema):
        return None
    listed = {part.path for part in parts}
    for path, part in last.parts.items():
        if path not in listed and (part.span is None or part.span[1] >= low):
            return None  # removed while its rows are still in the window
    reads = []
    for part in parts:
        if part.span is None:
            return None
        if part.span[1] < low or part.span[0] >= high:
            continue  # nothing in the window, whatever it was before
        before = last.parts.get(part.path)
        if before is None:
            reads.append((part, low))
        elif before.stamp != part.stamp or before.span != part.span:
            return None  # its rows of the last window may have changed
        elif part.span[1] >= last.high:
            reads.append((part, max(low, last.high)))  # its rows past the last window
    return reads


def moved(last: LastWindow, column: str, low: int, added: pd.DataFrame | None) -> pd.DataFrame | None:
    """``last.frame`` from ``low`` on followed by ``added``, or None when that would not be the whole read.

    ``added`` (sorted rows of the files read, None for none) must come
    strictly after every kept row and convert to the same column types;
    otherwise the read's own sorting and type conversion decide, and the
    caller reads the window whole.
    """
    frame = last.frame
    times = frame[column].array
    first = int(np.searchsorted(times.asi8, low)) if len(frame) else 0
    kept = frame.iloc[first:] if first else frame
    if added is None or added.empty:
        return kept.reset_index(drop=True) if first else kept
    if not added.columns.equals(frame.columns) or not added.dtypes.equals(frame.dtypes):
        return None
    new = added[column].array.asi8
    if bool((new[1:] < new[:-1]).any()) or (len(kept) and new[0] <= kept[column].array.asi8[-1]):
        return None  # ties or disorder with the kept rows: the read's stable sort decides
    if kept.empty:
        return added.reset_index(drop=True)
    return pd.concat([kept, added], ignore_index=True)


def keepable(frame: pd.DataFrame, schema: pa.Schema) -> bool:
    """Whether the frame's column types follow from ``schema`` alone (see the module), so a window may be kept."""
    kinds = {name: dtype.kind for name, dtype in zip(frame.columns, frame.dtypes)}
    for field in schema:
        if pa.types.is_dictionary(field.type):
            return False
        if (pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)) and \
                kinds.get(field.name) not in ("i", "u", "b"):
            return False  # a null made it float or object
    return True
