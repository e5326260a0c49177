"""``mape db prune``: a retention pass now (or a dry run), its report as JSON; a bad setting names the field."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import Observation, observation_row
from mape._util.timeutil import utcnow
from mape.cli import app

runner = CliRunner()


def _config(tmp_path: Path, retention: dict[str, str]) -> tuple[Path, str]:
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": url, "models": [], "retention": retention}))
    return config, url


def _count(url: str) -> int:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Observation.__table__)).scalar_one()
    finally:
        engine.dispose()


def test_prune_reports_as_json_a_dry_run_changes_nothing_and_vacuum_shrinks_the_file(tmp_path: Path):
    config, url = _config(tmp_path, {"raw_for": "1d", "bucket": "1h"})
    upgrade(url)
    engine = create_engine_for(url)
    start = utcnow() - timedelta(days=3)
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="m")
        queries.add_observations(session, [observation_row(time=start + timedelta(minutes=i), model_id=model.id,
                                                           sensor="s", metric="m", value=float(i), labels={"f": "x" * 50})
                                           for i in range(3 * 24 * 60)])
    engine.dispose()

    dry = runner.invoke(app, ["db", "prune", "--dry-run", "--config", str(config)])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output)
    assert report["dry_run"] and report["raw_rows_replaced"] > 2 * 24 * 60 - 120
    assert _count(url) == 3 * 24 * 60

    done = runner.invoke(app, ["db", "prune", "--vacuum", "--config", str(config)])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["observations_after"] == _count(url) < 3 * 24 * 60 / 2
    assert report["storage_before"]["file_bytes"] > 0
    assert report["storage_after_vacuum"]["file_bytes"] < report["storage_after"]["file_bytes"]
    assert report["storage_after_vacuum"]["free_bytes"] == 0


def test_a_bad_retention_setting_exits_2_naming_the_field(tmp_path: Path):
    config, _ = _config(tmp_path, {"raw_for": "1h", "bucket": "1d"})
    result = runner.invoke(app, ["db", "prune", "--config", str(config)])
    assert result.exit_code == 2
    assert "retention.bucket" in result.output


def test_prune_vacuum_on_postgresql_vacuums_the_two_tables(db_url: str, tmp_path: Path):
    """The PostgreSQL branch of ``--vacuum`` (the pass itself may vacuum too, where autovacuum is off)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's VACUUM: the test above")
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({"db_url": db_url, "models": [], "retention": {"raw_for": "1d", "bucket": "1h"}}))
    engine = create_engine_for(db_url)
    start = utcnow() - timedelta(days=2)
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="m")
        queries.add_observations(session, [observation_row(time=start + timedelta(minutes=i), model_id=model.id,
                                                           sensor="s", metric="m", value=float(i))
                                           for i in range(2 * 24 * 60)])
    engine.dispose()

    done = runner.invoke(app, ["db", "prune", "--vacuum", "--config", str(config)])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["raw_rows_replaced"] > 0 and report["vacuum_seconds"] >= 0
    engine = create_engine_for(db_url)
    try:
        with engine.connect() as conn:
            vacuumed = dict(conn.exec_driver_sql("SELECT relname, last_vacuum FROM pg_stat_user_tables "
                                                 "WHERE schemaname = current_schema()").all())
    finally:
        engine.dispose()
    assert vacuumed["observation"] is not None and vacuumed["tick"] is not None
