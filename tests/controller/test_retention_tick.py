"""The tick thins old observations once per retention period, and a failing pass never fails the tick."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml
from sqlalchemy import text
from sqlmodel import select

from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, ManagedModel, Observation, observation_row
from mape.config import load_settings
from mape.controller import Controller
from tests.controller.world import make_world


def test_a_tick_thins_old_observations_once_per_period_and_never_fails_because_of_it(tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    world = make_world(tmp_path / "world", policies)
    data = yaml.safe_load(world.config_path.read_text())
    data["retention"] = {"raw_for": "2h", "bucket": "1h", "every": "3h"}
    world.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    controller = Controller(load_settings(world.config_path))
    at = world.scenario.at(1)
    with session_scope(controller.engine) as session:
        model_id = session.exec(select(ManagedModel.id)).first()
        queries.add_observations(session, [observation_row(
            time=at - timedelta(hours=10) + timedelta(minutes=5 * i), model_id=model_id, sensor="test",
            metric="test.metric", value=float(i)) for i in range(12 * 6)])  # six hours, ending 4 hours before `at`

    first = controller.tick(at)
    assert first.retention is not None and not first.errors
    assert first.retention["raw_rows_replaced"] >= 72 and first.retention["bucket_rows_written"] >= 6
    with session_scope(controller.engine) as session:
        rows = session.exec(select(Observation).where(Observation.metric == "test.metric")).all()
        assert len(rows) == 6 and all(r.samples == 12 for r in rows)
        assert session.exec(select(AuditEvent).where(AuditEvent.kind == "knowledge.retention")).one()

    assert controller.tick(at + timedelta(hours=1)).retention is None  # within `every`: not due
    assert controller.tick(at + timedelta(hours=3)).retention is not None

    with controller.engine.begin() as conn:  # the pass cannot run at all now
        conn.execute(text("DROP TABLE retention_state"))
    broken = controller.tick(at + timedelta(hours=6))
    assert broken.retention is None and not broken.errors
    assert [w for w in broken.warnings if w.startswith("retention: ")]
    controller.engine.dispose()
