"""Migration 0011 (table ``policy_mode_override``, admins' overrides of policy modes) adds a table and drops only it."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from sqlalchemy import inspect, text

from knowledge import policy_modes
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import alembic_config, current_revision, head_revision, upgrade

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def test_upgrading_adds_the_table_and_downgrading_drops_only_it(empty_url):
    upgrade(empty_url, "0010")
    engine = create_engine_for(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO managed_model (id, name, owner, description, labels, training_entrypoint, created_at, "
                "updated_at) VALUES (1, 'm', 'o', '', '{}', 'a.b:c', :t, :t)"), {"t": T0})
        assert "policy_mode_override" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    upgrade(empty_url, "0011")
    engine = create_engine_for(empty_url)
    try:
        assert "policy_mode_override" in inspect(engine).get_table_names()
        if current_revision(empty_url) == head_revision():
            with session_scope(engine) as session:
                policy_modes.set_mode(session, "p", "off", actor="ada", reason="incident", at=T0)
                policy_modes.set_mode(session, "p", "dry-run", actor="bob", reason="watching", at=T0)
            with session_scope(engine) as session:
                (row,) = policy_modes.overrides(session).values()
                assert (row.policy_name, row.mode, row.set_by, row.set_at) == ("p", "dry-run", "bob", T0)
    finally:
        engine.dispose()
    command.downgrade(alembic_config(empty_url), "0010")
    engine = create_engine_for(empty_url)
    try:
        assert "policy_mode_override" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, name FROM managed_model")).all() == [(1, "m")]
    finally:
        engine.dispose()
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
