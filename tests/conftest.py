"""Fixtures shared by the whole suite: knowledge bases on SQLite and PostgreSQL, a frozen clock.

PostgreSQL: every test that asks for ``db_url`` runs twice, once on a fresh
SQLite file and once on a fresh database on the server at 127.0.0.1:5432
(created and dropped here). Without a reachable server the PostgreSQL half is
skipped locally and fails under CI=true, where ``.ci/run`` has started it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")

from knowledge.database import create_engine_for  # noqa: E402
from knowledge.migrate import upgrade  # noqa: E402

PG_ADMIN_URL = os.environ.get("MAPE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True, connect_timeout=3)


def _pg_available() -> str | None:
    try:
        with _pg_admin():
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required under CI: {problem}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 not reachable: {problem}")
    return PG_ADMIN_URL


def _fresh_pg_database(admin_url: str) -> Iterator[str]:
    name = f"mape_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A migrated, empty knowledge base: the test runs once per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mape.db'}"
        upgrade(url)
        yield url
        return
    admin = request.getfixturevalue("pg_server")
    for url in _fresh_pg_database(admin):
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database, not migrated: a migration test decides which revision to create."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    yield from _fresh_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine_for(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    """A migrated SQLite knowledge base alone, for tests that need no second backend."""
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    upgrade(url)
    engine = create_engine_for(url)
    yield engine
    engine.dispose()


class SteppingClock:
    """A clock that stands still until told to move: ``clock()`` reads it, ``clock.advance(...)`` moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now = self.now + delta
        return self.now


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc))


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server with its own SQLite database, for tests that run real flows (slow to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
