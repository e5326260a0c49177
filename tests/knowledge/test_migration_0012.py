"""Migration 0012 (observation counts and range, the raw-rows index, ``retention_state``) keeps existing rows raw."""

from __future__ import annotations

from datetime import datetime, timezone

from alembic import command
from sqlalchemy import inspect, text

from knowledge.database import create_engine_for
from knowledge.migrate import alembic_config, current_revision, head_revision, upgrade

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)


def _columns(url: str) -> set[str]:
    engine = create_engine_for(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("observation")}
    finally:
        engine.dispose()


def test_upgrading_adds_the_columns_index_and_state_and_downgrading_removes_them(empty_url):
    upgrade(empty_url, "0011")
    engine = create_engine_for(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO managed_model (id, name, owner, description, labels, training_entrypoint, created_at, "
                "updated_at) VALUES (1, 'm', 'o', '', '{}', 'a.b:c', :t, :t)"), {"t": T0})
            conn.execute(text("INSERT INTO observation (id, time, model_id, sensor, metric, value, labels) "
                              "VALUES (1, :t, 1, 's', 'm', 0.5, '{}')"), {"t": T0})
    finally:
        engine.dispose()
    upgrade(empty_url, "0012")
    assert {"samples", "value_min", "value_max"} <= _columns(empty_url)
    engine = create_engine_for(empty_url)
    try:
        assert "ix_observation_raw_time" in {i["name"] for i in inspect(engine).get_indexes("observation")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, value, samples FROM observation")).all() == [(1, 0.5, None)]
            assert conn.execute(text("SELECT id, started_at, claimed_by FROM retention_state")).all() == [(1, None, "")]
    finally:
        engine.dispose()
    command.downgrade(alembic_config(empty_url), "0011")
    assert not {"samples", "value_min", "value_max"} & _columns(empty_url)
    engine = create_engine_for(empty_url)
    try:
        assert "retention_state" not in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, value FROM observation")).all() == [(1, 0.5)]
    finally:
        engine.dispose()
    upgrade(empty_url)
    assert current_revision(empty_url) == head_revision()
