"""The migrations build exactly the schema the SQLModel tables declare (no drift between the two)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import knowledge.tables  # noqa: F401 - registers the tables on SQLModel.metadata
from knowledge.database import create_engine_for
from knowledge.migrate import upgrade


def test_upgrading_to_head_gives_the_declared_tables_indexes_and_columns(empty_url):
    upgrade(empty_url)
    engine = create_engine_for(empty_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        engine.dispose()
    assert differences == []
