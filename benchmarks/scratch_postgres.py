"""A fresh PostgreSQL database for one benchmark run, dropped afterwards.

Who calls it: the benchmarks that measure the knowledge base on PostgreSQL
(:mod:`benchmarks.fleet_scale`, :mod:`benchmarks.soak`,
:mod:`benchmarks.retention`, :mod:`benchmarks.dashboard`). The server is the one
at ``MAPE_BENCH_PG_URL`` (default: 127.0.0.1:5432, user ``postgres``), as in
the tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

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


def knowledge_bases(stack: ExitStack, directory: Path, *, postgres: bool, prefix: str) -> dict[str, str]:
    """The knowledge bases a benchmark fills, by backend: a SQLite file in ``directory`` and, when ``postgres`` is
    asked and the server answers, a scratch database (:func:`scratch_database`, dropped when ``stack`` closes)."""
    import psycopg

    urls = {"sqlite": f"sqlite:///{directory / 'mape.db'}"}
    if postgres:
        try:
            urls["postgresql"] = stack.enter_context(scratch_database(prefix))
        except psycopg.OperationalError as exc:
            print(f"PostgreSQL at {PG_ADMIN_URL} does not answer ({exc}); SQLite only", flush=True)
    return urls
