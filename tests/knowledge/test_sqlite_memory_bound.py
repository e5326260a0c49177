"""SQLite's memory in a process is bounded by ``sqlite_cache_mib`` for all pooled connections together.

The first soak's resident memory grew with its knowledge base: each pooled
connection kept its own 64 MiB page cache. These tests read a real SQLite
file through several connections at once and ask SQLite itself how much
memory it holds (``sqlite3_memory_used`` of the library Python's sqlite3
module links to).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from knowledge.database import create_engine_for
from mape.config import Settings

try:
    _SQLITE = ctypes.CDLL("libsqlite3.so.0")
    _SQLITE.sqlite3_memory_used.restype = ctypes.c_int64
except OSError:  # Python's sqlite3 linked statically: its memory is not ours to ask
    _SQLITE = None

pytestmark = pytest.mark.skipif(_SQLITE is None, reason="no shared libsqlite3 to ask for its memory")

MIB = 2**20


def sqlite_memory_mib() -> float:
    assert _SQLITE is not None
    return _SQLITE.sqlite3_memory_used() / MIB


@pytest.fixture
def big_file(tmp_path: Path) -> str:
    """A 24 MiB knowledge-base-sized file."""
    url = f"sqlite:///{tmp_path / 'big.db'}"
    engine = create_engine_for(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE blob_rows (x BLOB)"))
        for _ in range(4):
            conn.execute(text("INSERT INTO blob_rows VALUES (:x)"), [{"x": os.urandom(1000)} for _ in range(6000)])
    engine.dispose()
    return url


def read_through(url: str, connections: int, cache_mib: int) -> float:
    """SQLite's memory after ``connections`` connections held at once each read the whole file, in MiB."""
    engine = create_engine_for(url, sqlite_cache_mib=cache_mib)
    held = [engine.connect() for _ in range(connections)]
    try:
        for conn in held:
            assert conn.execute(text("SELECT sum(length(x)) FROM blob_rows")).scalar_one() == 24_000_000
        return sqlite_memory_mib()
    finally:
        for conn in held:
            conn.close()
        engine.dispose()


def test_all_connections_together_stay_within_the_bound(big_file: str) -> None:
    before = sqlite_memory_mib()
    assert read_through(big_file, connections=3, cache_mib=8) - before < 8 + 1
    # with room for it, each connection caches the file on its own: the bound is what keeps the sum down
    assert read_through(big_file, connections=3, cache_mib=200) - before > 2 * 23


def test_the_bound_is_a_setting_with_a_clear_error() -> None:
    assert Settings().sqlite_cache_mib == 16
    assert Settings(sqlite_cache_mib=64).sqlite_cache_mib == 64
    with pytest.raises(ValueError, match="sqlite_cache_mib"):
        Settings(sqlite_cache_mib=0)
    with pytest.raises(ValueError, match="sqlite_cache_mib must be at least 1, got 0"):
        create_engine_for("sqlite://", sqlite_cache_mib=0)
