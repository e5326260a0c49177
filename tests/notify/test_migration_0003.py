"""Migration 0003 adds the notification outbox to a knowledge base that holds data, and removes it again."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from sqlalchemy import inspect, text

from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import alembic_config, current_revision, head_revision, upgrade
from knowledge.outbox import due, enqueue
from knowledge.tables import Notification

CREATED = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def _model_at_0002(url: str) -> None:
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO managed_model (id, name, owner, description, labels, training_entrypoint, created_at, "
                "updated_at) VALUES (1, 'm', 'o', '', '{}', 'a.b:c', :t, :t)"), {"t": CREATED})
    finally:
        engine.dispose()


def test_upgrading_from_0002_adds_a_working_outbox_and_downgrading_removes_it(empty_url):
    upgrade(empty_url, "0002")
    _model_at_0002(empty_url)
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    engine = create_engine_for(empty_url)
    try:
        inspector = inspect(engine)
        assert "notification" in inspector.get_table_names()
        assert "ix_notification_state_next_attempt_at" in {i["name"] for i in inspector.get_indexes("notification")}
        with session_scope(engine) as session:
            row, created = enqueue(session, Notification(
                event="escalation", channel="ops", model_id=1, title="t", body="b", next_attempt_at=CREATED,
                dedup_key="escalation/x/ops"))
            assert created and enqueue(session, Notification(
                event="escalation", channel="ops", title="t", body="b", next_attempt_at=CREATED,
                dedup_key="escalation/x/ops"))[1] is False
        with session_scope(engine) as session:
            (found,) = due(session, CREATED)
            assert (found.id, found.state, found.attempts, found.delivered) == (row.id, "pending", 0, [])
    finally:
        engine.dispose()

    command.downgrade(alembic_config(empty_url), "0002")
    engine = create_engine_for(empty_url)
    try:
        assert "notification" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM managed_model")).all() == [("m",)]
    finally:
        engine.dispose()
