"""A fresh PostgreSQL database for one benchmark run, dropped afterwards.

Who calls it: the benchmarks that measure the knowledge base on PostgreSQL
(:mod:`benchmarks.fleet_scale`, :mod:`benchmarks.soak`). The server is the one
at ``MAPE_BENCH_PG_URL`` (default: 127.0.0.1:5432, user ``postgres``), as in
the tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN_URL = os.environ.get("MAPE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create ``<prefix>_<random>`` on the server and yield its SQLAlchemy URL; drop it (connections and all) on exit."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
