"""Migration 0002 (policy state, pauses, decision.expires_at) upgrades a knowledge base that holds data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alembic import command
from sqlalchemy import inspect, text

from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import alembic_config, current_revision, head_revision, upgrade
from knowledge.tables import Decision

CREATED = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def _insert_at_0001(url: str) -> None:
    """A model and an awaiting decision, written with the 0001 columns only (as a 0001 controller would)."""
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO managed_model (id, name, owner, description, labels, training_entrypoint, created_at, "
                "updated_at) VALUES (1, 'm', 'o', '', '{}', 'a.b:c', :t, :t)"), {"t": CREATED})
            conn.execute(text(
                "INSERT INTO decision (id, created_at, tick_at, model_id, policy_name, action, params, evidence, status, "
                "reason, actor, priority, dedup_key, comment) VALUES (7, :t, :t, 1, 'careful', 'retrain', "
                "'{\"window\": \"4h\"}', '{}', 'awaiting_approval', 'awaiting approval', 'controller', 5, "
                "'m/careful/2026-01-05T10:00:00+00:00', '')"), {"t": CREATED})
    finally:
        engine.dispose()


def test_upgrading_a_0001_database_with_data_keeps_the_rows_and_adds_the_new_schema(empty_url):
    upgrade(empty_url, "0001")
    assert current_revision(empty_url) == "0001"
    _insert_at_0001(empty_url)

    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
    engine = create_engine_for(empty_url)
    try:
        inspector = inspect(engine)
        assert {"policy_state", "pause"} <= set(inspector.get_table_names())
        assert "expires_at" in {c["name"] for c in inspector.get_columns("decision")}
        assert "ix_decision_status_expires_at" in {i["name"] for i in inspector.get_indexes("decision")}
        with session_scope(engine) as session:
            decision = session.get(Decision, 7)
            assert decision is not None
            assert (decision.status, decision.policy_name, decision.params, decision.priority) == (
                "awaiting_approval", "careful", {"window": "4h"}, 5)
            assert decision.created_at == CREATED and decision.expires_at is None  # old decisions never expire
            decision.expires_at = CREATED + timedelta(hours=24)  # the new column is writable
            session.add(decision)
        with session_scope(engine) as session:
            assert session.get(Decision, 7).expires_at == CREATED + timedelta(hours=24)
    finally:
        engine.dispose()


def test_downgrading_to_0001_keeps_the_decisions(empty_url):
    upgrade(empty_url, "0001")
    _insert_at_0001(empty_url)
    upgrade(empty_url)
    command.downgrade(alembic_config(empty_url), "0001")
    assert current_revision(empty_url) == "0001"
    engine = create_engine_for(empty_url)
    try:
        inspector = inspect(engine)
        assert not {"policy_state", "pause"} & set(inspector.get_table_names())
        assert "expires_at" not in {c["name"] for c in inspector.get_columns("decision")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, status FROM decision")).all() == [(7, "awaiting_approval")]
    finally:
        engine.dispose()
