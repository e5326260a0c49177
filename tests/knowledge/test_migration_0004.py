"""Migration 0004 (verification columns on action_run, decision.follows_run_id) keeps existing runs and versions."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from sqlalchemy import inspect, text

from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import alembic_config, current_revision, head_revision, upgrade
from knowledge.tables import ActionRun, Decision

CREATED = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
RUN_COLUMNS = {"verdict", "verify_until", "verify_true", "verify_false", "verify_errors", "verify_last",
               "last_verified_at", "verdict_at", "verification", "block_lifted_at", "block_lifted_by"}


def _insert_at_0003(url: str) -> None:
    """A model, a decision, its succeeded run, and a version the run created (which references the run)."""
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
            conn.execute(text(
                "INSERT INTO action_run (id, decision_id, model_id, action, params, idempotency_key, state, attempts, "
                "started_at, finished_at, result, message, created_at, updated_at) VALUES (3, 7, 1, 'retrain', '{}', "
                "'mape-decision-7', 'succeeded', 1, :t, :t, '{\"version\": 2}', '', :t, :t)"), {"t": CREATED})
            conn.execute(text(
                "INSERT INTO model_version (id, model_id, version, stage, artifact_uri, metrics, evaluation, "
                "created_by_action_run_id, created_at, promoted_at) VALUES (1, 1, 1, 'production', 'a', '{}', '{}', "
                "3, :t, :t)"), {"t": CREATED})
    finally:
        engine.dispose()


def test_upgrading_keeps_the_runs_as_never_verified(empty_url):
    upgrade(empty_url, "0003")
    _insert_at_0003(empty_url)
    upgrade(empty_url, "0004")
    assert current_revision(empty_url) == "0004"
    upgrade(empty_url)  # the ORM below maps the newest schema
    engine = create_engine_for(empty_url)
    try:
        inspector = inspect(engine)
        assert RUN_COLUMNS <= {c["name"] for c in inspector.get_columns("action_run")}
        assert "ix_action_run_verdict" in {i["name"] for i in inspector.get_indexes("action_run")}
        assert "follows_run_id" in {c["name"] for c in inspector.get_columns("decision")}
        with session_scope(engine) as session:
            run = session.get(ActionRun, 3)
            assert run is not None and (run.state, run.result) == ("succeeded", {"version": 2})
            assert (run.verdict, run.verify_true, run.verify_false, run.verify_errors, run.verification,
                    run.block_lifted_at) == (None, 0, 0, 0, {}, None)
            assert session.get(Decision, 7).follows_run_id is None
            run.verdict, run.verify_false, run.verification = "fail", 2, {"expect": "x"}
            session.add(run)
        with session_scope(engine) as session:
            run = session.get(ActionRun, 3)
            assert (run.verdict, run.verify_false, run.verification) == ("fail", 2, {"expect": "x"})
    finally:
        engine.dispose()


def test_downgrading_to_0003_keeps_the_runs_and_the_versions_that_reference_them(empty_url):
    upgrade(empty_url, "0003")
    _insert_at_0003(empty_url)
    upgrade(empty_url, "0004")
    command.downgrade(alembic_config(empty_url), "0003")
    assert current_revision(empty_url) == "0003"
    engine = create_engine_for(empty_url)
    try:
        inspector = inspect(engine)
        assert not RUN_COLUMNS & {c["name"] for c in inspector.get_columns("action_run")}
        assert "follows_run_id" not in {c["name"] for c in inspector.get_columns("decision")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, state FROM action_run")).all() == [(3, "succeeded")]
            assert conn.execute(text("SELECT id, created_by_action_run_id FROM model_version")).all() == [(1, 3)]
    finally:
        engine.dispose()
    upgrade(empty_url)  # and up again
    assert current_revision(empty_url) == head_revision()
