"""The default rules turn the quality.* counts into symptoms of their own, each naming the observation it came from."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.queries import add_observations
from knowledge.tables import Observation, Symptom
from mape.analyze import Analyzer
from mape.config import default_symptom_rules

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
TICK = timedelta(minutes=5)


@pytest.mark.parametrize(("metric", "kind", "severity"), [
    ("quality.schema_changes", "schema_change", "critical"),
    ("quality.null_spikes", "null_spike", "warning"),
    ("quality.out_of_range_spikes", "out_of_range", "warning"),
    ("quality.unseen_category_columns", "unseen_categories", "warning"),
])
def test_a_quality_finding_opens_its_symptom_at_once_and_closes_at_the_first_clean_tick(engine, metric, kind,
                                                                                       severity):
    analyzer = Analyzer(default_symptom_rules())
    reports = []
    with session_scope(engine) as session:
        model_id = registry.upsert_model(session, name="m").id
        for step, value in enumerate((0.0, 2.0, 1.0, 0.0)):
            at = T0 + step * TICK
            add_observations(session, [Observation(time=at, model_id=model_id, sensor="quality", metric=metric,
                                                   value=value, labels={})])
            reports.append(analyzer.run(session, {"m": model_id}, at))
        ids = list(session.exec(select(Observation.id).order_by(Observation.id)))
        [symptom] = session.exec(select(Symptom).where(Symptom.kind == kind)).all()

    assert [[v.kind for v in r.model("m").opened] for r in reports] == [[], [kind], [], []]
    assert [[v.kind for v in r.model("m").closed] for r in reports] == [[], [], [], [kind]]
    assert (symptom.severity, symptom.opened_at, symptom.closed_at) == (severity, T0 + TICK, T0 + 3 * TICK)
    assert [(e["observation_id"], e["value"]) for e in symptom.evidence["opened_by"]] == [(ids[1], 2.0)]
    assert [(e["observation_id"], e["value"]) for e in symptom.evidence["closed_by"]] == [(ids[3], 0.0)]


def test_a_column_missing_upstream_opens_schema_change_from_a_real_monitor_pass(engine, tmp_path):
    from mape.monitor import Monitor
    from tests.monitor.test_monitor_fallback import AT, write_world
    from tests.monitor.test_monitor_stage_observations import model_config, register

    write_world(tmp_path, drop_x2_from_newer_files=True)
    monitor = Monitor([model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv"))])
    with session_scope(engine) as session:
        ids = {"churn": register(session, "churn")}
        monitor.run(session, ids, AT)
        report = Analyzer(default_symptom_rules()).run(session, ids, AT)
        [row] = session.exec(select(Observation).where(Observation.metric == "quality.schema_changes")).all()
        [symptom] = session.exec(select(Symptom).where(Symptom.kind == "schema_change")).all()

    assert {v.kind for v in report.model("churn").opened} >= {"schema_change"}
    assert symptom.severity == "critical"
    assert symptom.evidence["opened_by"] == [{"observation_id": row.id, "time": AT.isoformat(), "value": 1.0}]
