"""Engines and sessions for the knowledge base: SQLite by default, any SQLAlchemy URL.

Who calls it: the controller and CLI create one engine per process with
:func:`create_engine_for`; stages open short sessions with :func:`session_scope`.
SQLite gets WAL journaling, foreign keys and a busy timeout so the dashboard can
read while the controller writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine


def normalise_url(url: str) -> str:
    """Choose the psycopg 3 driver for bare ``postgresql://`` URLs.

    >>> normalise_url("postgresql://root@127.0.0.1/mape")
    'postgresql+psycopg://root@127.0.0.1/mape'
    >>> normalise_url("sqlite:///mape.db")
    'sqlite:///mape.db'
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _json_text(value: Any) -> str:
    """JSON columns (evidence, params, payloads) serialised with orjson: a planning pass stores thousands."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # a value orjson does not know (e.g. an int beyond 64 bits): the standard library's view
        return json.dumps(value)


def _json_value(text: str) -> Any:
    """JSON columns read back with orjson; the standard library for what orjson refuses (NaN, huge integers)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


#: SQLite's page cache, in MiB, unless a caller says otherwise (``Settings.sqlite_cache_mib``).
DEFAULT_SQLITE_CACHE_MIB = 16


def create_engine_for(url: str, *, echo: bool = False, sqlite_cache_mib: int = DEFAULT_SQLITE_CACHE_MIB) -> Engine:
    """Create an engine for ``url``; creates the parent directory of a SQLite file.

    ``sqlite_cache_mib`` bounds SQLite's memory: each pooled connection's page
    cache (``PRAGMA cache_size``) and, together, all of the process's SQLite
    memory (``PRAGMA soft_heap_limit``, process-wide: beyond it SQLite reuses
    its cache pages instead of allocating more). Without the second bound
    every pooled connection would keep its own full cache, and a long-running
    controller's memory would grow with its knowledge base until each had
    cached all of it (the soak measured this: ``benchmarks/soak.py``).
    Ignored for PostgreSQL, whose server holds its own cache.
    """
    if sqlite_cache_mib < 1:
        raise ValueError(f"sqlite_cache_mib must be at least 1, got {sqlite_cache_mib}")
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        in_memory = not database or database == ":memory:"
        if not in_memory:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if in_memory else None,
            json_serializer=_json_text,
            json_deserializer=_json_value,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA cache_size=-{sqlite_cache_mib * 1024}")  # in KiB when negative
            cursor.execute(f"PRAGMA soft_heap_limit={sqlite_cache_mib * 2**20}")
            cursor.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, json_serializer=_json_text,
                         json_deserializer=_json_value)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
