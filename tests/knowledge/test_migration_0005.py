"""Migration 0005 (decision.not_before, decision.deadline for deferred actions) keeps existing decisions."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from sqlalchemy import inspect, text

from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import alembic_config, current_revision, head_revision, upgrade
from knowledge.tables import Decision

CREATED = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def _insert_at_0004(url: str) -> None:
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO managed_model (id, name, owner, description, labels, training_entrypoint, created_at, "
                "updated_at) VALUES (1, 'm', 'o', '', '{}', 'a.b:c', :t, :t)"), {"t": CREATED})
            conn.execute(text(
                "INSERT INTO decision (id, created_at, tick_at, model_id, policy_name, action, params, evidence, "
                "status, reason, actor, priority, dedup_key, comment) VALUES (7, :t, :t, 1, 'p', 'retrain', '{}', "
                "'{}', 'proposed', '', 'controller', 0, 'm/p/2026-01-05T10:00:00+00:00', '')"), {"t": CREATED})
    finally:
        engine.dispose()


def test_upgrading_keeps_decisions_as_acting_at_once_and_downgrading_drops_only_the_new_columns(empty_url):
    upgrade(empty_url, "0004")
    _insert_at_0004(empty_url)
    upgrade(empty_url, "0005")
    engine = create_engine_for(empty_url)
    try:
        assert {"not_before", "deadline"} <= {c["name"] for c in inspect(engine).get_columns("decision")}
        if current_revision(empty_url) == head_revision():
            with session_scope(engine) as session:
                decision = session.get(Decision, 7)
                assert decision is not None and (decision.not_before, decision.deadline) == (None, None)
                decision.not_before = CREATED
            with session_scope(engine) as session:
                assert session.get(Decision, 7).not_before == CREATED
    finally:
        engine.dispose()
    command.downgrade(alembic_config(empty_url), "0004")
    engine = create_engine_for(empty_url)
    try:
        assert not {"not_before", "deadline"} & {c["name"] for c in inspect(engine).get_columns("decision")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, status FROM decision")).all() == [(7, "proposed")]
    finally:
        engine.dispose()
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
