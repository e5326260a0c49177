"""Decoded Parquet files kept in memory while they do not change, under a byte budget.

Who calls it: :class:`mape.data.sources.FileSource`. A controller ticking
every minute reads the same hour of inference log and labels sixty times;
files written once (hourly partitions, a day's labels) decode once. A file is
known unchanged by its identity stamp (modification time, size, inode and
status-change time: a rewrite changes at least the last, even one that keeps
the size and sets an old modification time). The least recently used files
go first when the budget is spent; the files a read is using are never
evicted by that read, and a file that does not fit is read and not kept.
Tables are Arrow tables, which nothing can change in place, so a caller
cannot alter what the next tick reads. A table's pandas conversion may be
kept beside it (counted in the budget) where pandas copies on write (pandas
3): a frame handed out then shares memory with the kept one only until
either is changed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

#: What tells a file apart from its earlier contents: (mtime ns, size, inode, ctime ns).
Stamp = tuple[int, int, int, int]


def stamp_of(info: os.stat_result) -> Stamp:
    """The identity stamp of a file from its ``stat``."""
    return info.st_mtime_ns, info.st_size, info.st_ino, info.st_ctime_ns


@dataclass
class _Entry:
    stamp: Stamp
    table: pa.Table
    nbytes: int
    frame: pd.DataFrame | None = None


class TableCache:
    """Least-recently-used decoded files, at most ``budget_bytes`` of Arrow memory.

    Parameters
    ----------
    budget_bytes : int
        Memory the kept tables may take (``pyarrow.Table.nbytes``); 0 keeps nothing.

    Examples
    --------
    >>> cache = TableCache(budget_bytes=1 << 20)
    >>> table = pa.table({"a": [1, 2, 3]})
    >>> cache.put("f.parquet", (1, 24, 7, 1), table)
    True
    >>> cache.get("f.parquet", (1, 24, 7, 1)) is table, cache.get("f.parquet", (2, 24, 7, 2))
    (True, None)
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be at least 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._used = 0
        self.hits = 0
        self.misses = 0

    @property
    def used_bytes(self) -> int:
        """Memory taken by the kept tables."""
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def fits(self, nbytes: int) -> bool:
        """Whether a table of ``nbytes`` could be kept at all."""
        return 0 < nbytes <= self.budget_bytes

    def get(self, path: str, stamp: Stamp) -> pa.Table | None:
        """The table kept for ``path`` when its stamp is still ``stamp``; an outdated one is dropped."""
        entry = self._entries.get(path)
        if entry is None or entry.stamp != stamp:
            if entry is not None:
                self._drop(path)
            self.misses += 1
            return None
        self._entries.move_to_end(path)
        self.hits += 1
        return entry.table

    def put(self, path: str, stamp: Stamp, table: pa.Table, *, keep: Collection[str] = ()) -> bool:
        """Keep ``table`` as ``path``'s contents at ``stamp``, evicting others but ``keep``; whether it was kept."""
        if path in self._entries:
            self._drop(path)
        nbytes = table.nbytes
        if not self.fits(nbytes):
            return False
        while self._used + nbytes > self.budget_bytes:  # evict the oldest first, looking no further than needed
            victim = next((p for p in self._entries if p not in keep), None)
            if victim is None:
                break
            self._drop(victim)
        if self._used + nbytes > self.budget_bytes:
            return False
        self._entries[path] = _Entry(stamp, table, nbytes)
        self._used += nbytes
        return True

    def holds(self, path: str, table: pa.Table) -> bool:
        """Whether ``table`` is the table kept for ``path`` (not counted as a hit)."""
        entry = self._entries.get(path)
        return entry is not None and entry.table is table

    def frame(self, path: str, table: pa.Table) -> pd.DataFrame | None:
        """The pandas conversion kept with ``path``'s table, when ``table`` is the table kept."""
        entry = self._entries.get(path)
        return entry.frame if entry is not None and entry.table is table else None

    def attach(self, path: str, table: pa.Table, frame: pd.DataFrame) -> bool:
        """Keep ``frame``, the pandas conversion of the kept ``table``, while the budget allows; whether it was kept.

        Nothing else is evicted for it: the table is what saves the decoding.
        """
        entry = self._entries.get(path)
        if entry is None or entry.table is not table or entry.frame is not None:
            return False
        nbytes = int(frame.memory_usage(index=False, deep=False).sum())
        if self._used + nbytes > self.budget_bytes:
            return False
        entry.frame, entry.nbytes = frame, entry.nbytes + nbytes
        self._used += nbytes
        return True

    def keep_only(self, paths: Collection[str]) -> int:
        """Forget the tables of every path not in ``paths`` (files that were deleted); how many were forgotten.

        >>> cache = TableCache(budget_bytes=1 << 20)
        >>> cache.put("old.parquet", (1, 24, 7, 1), pa.table({"a": [1]})), cache.keep_only({"new.parquet"}), len(cache)
        (True, 1, 0)
        """
        gone = [path for path in self._entries if path not in paths]
        for path in gone:
            self._drop(path)
        return len(gone)

    def clear(self) -> None:
        """Forget every table."""
        self._entries.clear()
        self._used = 0

    def _drop(self, path: str) -> None:
        self._used -= self._entries.pop(path).nbytes
