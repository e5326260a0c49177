"""The Model page's reads: downsampling in SQL, top features, markers and versions, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from knowledge import model_timeline as mt
from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision, observation_row
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _minutes(engine: Engine, n: int) -> int:
    """A model with ``n`` minute ticks of drift.share_drifted (value: the minute) and three features' effect sizes."""
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk")
        rows = []
        for minute in range(n):
            at = T0 + timedelta(minutes=minute)
            rows.append(observation_row(time=at, model_id=model.id, sensor="drift", metric="drift.share_drifted",
                                        value=float(minute)))
            rows += [observation_row(time=at, model_id=model.id, sensor="drift", metric="drift.feature.effect_size",
                                     value=weight * minute, labels={"feature": name, "test": "ks"})
                     for name, weight in (("age", 1.0), ("income", 3.0), ("debt", 2.0))]
        rows.append(observation_row(time=T0, model_id=model.id, sensor="drift", metric="drift.share_drifted",
                                    value=None))  # "no data this tick": never drawn
        queries.add_observations(session, rows)
        return model.id


def test_downsampling_bounds_the_points_and_aggregates_each_bucket(engine: Engine):
    model_id = _minutes(engine, 3000)
    with session_scope(engine) as session:
        points = mt.downsampled(session, model_id, ["drift.share_drifted"], since=T0,
                                until=T0 + timedelta(minutes=3000), max_points=100)
    width = mt.bucket_seconds(T0, T0 + timedelta(minutes=3000), 100)
    assert width == 1801 and len(points) <= 100
    first = points[0]  # minutes 0..30 (bucket [0 s, 1801 s))
    assert (first.time, first.count, first.low, first.high, first.mean) == (T0, 31, 0.0, 30.0, 15.0)
    assert sum(p.count for p in points) == 3000
    assert [p.time for p in points] == sorted(p.time for p in points)
    assert points[1].time == T0 + timedelta(seconds=width)


def test_series_split_by_label_and_kept_to_the_top_features(engine: Engine):
    model_id = _minutes(engine, 600)
    until = T0 + timedelta(minutes=600)
    with session_scope(engine) as session:
        top = mt.top_labels(session, model_id, "drift.feature.effect_size", "feature", since=T0, until=until, n=2)
        points = mt.downsampled(session, model_id, ["drift.feature.effect_size"], since=T0, until=until,
                                max_points=10, by=["feature"], only=("feature", [name for name, _ in top]))
    assert top == [("income", 3 * 599.0), ("debt", 2 * 599.0)]
    assert sorted({p.key for p in points}) == [("debt",), ("income",)]
    assert max(len([p for p in points if p.key == key]) for key in (("debt",), ("income",))) <= 10
    assert max(p.high for p in points if p.key == ("income",)) == 3 * 599.0


def test_observed_span_and_an_empty_range(engine: Engine):
    model_id = _minutes(engine, 60)
    with session_scope(engine) as session:
        span = mt.observed_span(session, model_id, ["drift.share_drifted", "carbon.intensity"])
        nothing = mt.downsampled(session, model_id, ["carbon.intensity"], since=T0, until=T0 + timedelta(hours=1))
        assert mt.observed_span(session, model_id, ["carbon.intensity"]) == (None, None)
    assert span == (T0, T0 + timedelta(minutes=59))
    assert nothing == []


def test_markers_and_versions_with_lineage_and_gate_numbers(engine: Engine):
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk")
        v1 = registry.promote(session, registry.register_version(session, model_id=model.id, artifact_uri="a"),
                              actor="test", at=T0)
        for hour in range(3):
            session.add(Decision(model_id=model.id, policy_name="drift-guard", action="retrain", status="proposed",
                                 created_at=T0 + timedelta(hours=hour), evidence={"when": "x"},
                                 dedup_key=f"d{hour}"))
        session.flush()
        decision = session.exec(select(Decision).where(Decision.dedup_key == "d1")).one()
        run = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", state="succeeded",
                        idempotency_key="r1", created_at=T0 + timedelta(hours=1), verdict="pass")
        session.add(run)
        session.flush()
        v2 = registry.register_version(session, model_id=model.id, artifact_uri="b", created_by_action_run_id=run.id)
        registry.promote(session, v2, actor="test", evaluation={"passed": True, "candidate": {"accuracy": 0.9}})
    with session_scope(engine) as session:
        marks = mt.decision_marks(session, model.id, since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=3),
                                  limit=5)
        runs = mt.run_marks(session, model.id, since=T0, until=T0 + timedelta(hours=3))
        history = mt.version_history(session, model.id)
    assert [m.time for m in marks] == [T0 + timedelta(hours=2), T0 + timedelta(hours=1)]
    assert (marks[1].run_id, marks[1].run_state, marks[1].verdict, marks[0].run_id) == (run.id, "succeeded", "pass",
                                                                                       None)
    assert [(r.id, r.policy, r.decision_id) for r in runs] == [(run.id, "drift-guard", decision.id)]
    assert [(v.version, v.stage, v.parent_version, v.action_run_id, v.policy) for v in history] == \
        [(2, "production", 1, run.id, "drift-guard"), (1, "archived", None, None, None)]
    assert history[0].evaluation["candidate"] == {"accuracy": 0.9} and v1.version == 1


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: mt.downsampled(s, 1, ["m"], since=T0, until=T0), "'until' parameter of downsampled must be after"),
    (lambda s: mt.downsampled(s, 1, ["m"], since=T0, until=T0 + timedelta(1), max_points=0),
     "'max_points' parameter of downsampled must be an int of at least 1. Got 0 instead."),
    (lambda s: mt.top_labels(s, 1, "m", "f", since=T0.replace(tzinfo=None), until=T0 + timedelta(1)),
     "'since' parameter of top_labels must be a timezone-aware datetime"),
])
def test_bad_arguments_name_the_parameter(sqlite_engine: Engine, call, message):  # type: ignore[no-untyped-def]
    with session_scope(sqlite_engine) as session, pytest.raises(InvalidParameterError, match=message):
        call(session)
