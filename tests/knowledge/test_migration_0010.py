"""Migration 0010 (table ``deferral_shadow``, the shadow searches of live deferral) adds a table and drops only it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alembic import command
from sqlalchemy import inspect, text

from knowledge import forecasts
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import alembic_config, current_revision, head_revision, upgrade
from knowledge.tables import DeferralShadow

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def _shadow(issued: datetime) -> DeferralShadow:
    return DeferralShadow(key="carbon 1h +0s..8h", issued_at=issued, objective={"carbon": 1.0}, earliest=issued,
                          latest_start=issued + timedelta(hours=8), duration_s=3600.0,
                          chosen_start=issued + timedelta(hours=3), due_at=issued + timedelta(hours=4),
                          predicted_gain=120.5, predicted={"run_now": {"carbon": 300.0}, "chosen": {"carbon": 179.5},
                                                           "scale": {"carbon": 1.0}})


def test_upgrading_adds_the_table_and_downgrading_drops_only_it(empty_url):
    upgrade(empty_url, "0009")
    engine = create_engine_for(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO managed_model (id, name, owner, description, labels, training_entrypoint, created_at, "
                "updated_at) VALUES (1, 'm', 'o', '', '{}', 'a.b:c', :t, :t)"), {"t": T0})
        assert "deferral_shadow" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    upgrade(empty_url, "0010")
    engine = create_engine_for(empty_url)
    try:
        inspector = inspect(engine)
        assert "deferral_shadow" in inspector.get_table_names()
        assert {i["name"] for i in inspector.get_indexes("deferral_shadow")} >= {"ix_deferral_shadow_status_due_at"}
        if current_revision(empty_url) == head_revision():
            with session_scope(engine) as session:
                assert forecasts.add_shadow(session, _shadow(T0))
                assert not forecasts.add_shadow(session, _shadow(T0)), "one search per key and issue time"
            with session_scope(engine) as session:
                (row,) = forecasts.due_shadows(session, T0 + timedelta(hours=4))
                assert row.status == "pending" and row.issued_at == T0 and row.predicted["chosen"] == {"carbon": 179.5}
    finally:
        engine.dispose()
    command.downgrade(alembic_config(empty_url), "0009")
    engine = create_engine_for(empty_url)
    try:
        assert "deferral_shadow" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, name FROM managed_model")).all() == [(1, "m")]
    finally:
        engine.dispose()
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
