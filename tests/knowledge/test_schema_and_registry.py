"""The knowledge base migrates, keeps its invariants and round-trips times, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import inspect, text
from sqlmodel import select

from knowledge import audit, registry
from knowledge.database import session_scope
from knowledge.migrate import current_revision, head_revision, upgrade
from knowledge.tables import AuditEvent, ModelVersion, Stage


def test_upgrade_creates_every_table_and_is_idempotent(db_url, engine):
    upgrade(db_url)  # a second run changes nothing
    assert current_revision(db_url) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"managed_model", "model_version", "observation", "symptom", "decision", "action_run",
            "policy_version", "audit_event", "tick"} <= tables


def test_promote_keeps_one_production_version_and_rollback_returns_to_the_last_good(engine, clock):
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="m", labels={"team": "risk"}, training_entrypoint="a.b:c")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1", metrics={"accuracy": 0.9})
        registry.promote(session, v1, actor="test", at=clock())
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2")
        registry.promote(session, v2, actor="test", at=clock.advance(timedelta(hours=1)))
        assert v2.parent_version_id == v1.id
        stages = {v.version: v.stage for v in registry.versions(session, model.id)}
        assert stages == {1: Stage.archived.value, 2: Stage.production.value}

        back = registry.rollback(session, model.id, actor="test", reason="regression", at=clock.advance(timedelta(hours=1)))
        assert back.version == 1
        stages = {v.version: v.stage for v in registry.versions(session, model.id)}
        assert stages == {1: Stage.production.value, 2: Stage.rejected.value}
        # v2 was rolled back from: it is never a rollback target again
        with pytest.raises(registry.RegistryError):
            registry.rollback(session, model.id, actor="test", reason="again")

    with session_scope(engine) as session:
        production = session.exec(select(ModelVersion).where(ModelVersion.stage == "production")).all()
        assert [v.version for v in production] == [1]
        assert production[0].promoted_at == clock()  # aware UTC survives the round trip
        assert production[0].promoted_at.utcoffset() == timedelta(0)


def test_upsert_model_audits_only_real_changes(engine):
    with session_scope(engine) as session:
        registry.upsert_model(session, name="m", owner="a")
        registry.upsert_model(session, name="m", owner="a")
        registry.upsert_model(session, name="m", owner="b")
        kinds = [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    assert kinds == ["model.registered", "model.updated"]


def test_audit_chain_verifies_and_detects_an_altered_row(engine):
    with session_scope(engine) as session:
        for i in range(5):
            audit.record(session, actor="tester", kind="thing.happened", subject=f"item {i}", payload={"i": i})
    with session_scope(engine) as session:
        verdict = audit.verify_chain(session)
        assert verdict.ok and verdict.events == 5
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE id = 3"))
    with session_scope(engine) as session:
        verdict = audit.verify_chain(session)
    assert not verdict.ok
    assert verdict.first_bad_id == 3
    assert "altered" in verdict.reason
