"""Observations are stored from ORM objects or plain rows alike; production versions are looked up a fleet at a time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlmodel import col, select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.queries import add_observations
from knowledge.tables import Observation, new_observation, observation_row

AT = datetime(2026, 1, 5, 12, tzinfo=timezone.utc)


def test_objects_and_rows_are_stored_alike(engine):
    with session_scope(engine) as session:
        model_id = registry.upsert_model(session, name="m").id
        stored = add_observations(session, [
            new_observation(time=AT, model_id=model_id, sensor="drift", metric="drift.share_drifted", value=0.25),
            observation_row(time=AT, model_id=model_id, sensor="drift", metric="drift.feature.p_value", value=0.01,
                            labels={"feature": "x1", "test": "ks"}),
            observation_row(time=AT + timedelta(hours=1), model_id=model_id, sensor="quality",
                            metric="quality.n_current", value=None),
            Observation(time=AT, model_id=model_id, sensor="gpu", metric="gpu.devices", value=2.0),
        ])

    with session_scope(engine) as session:
        got = [(o.time, o.sensor, o.metric, o.value, o.labels)
               for o in session.exec(select(Observation).order_by(col(Observation.id)))]
    assert stored == 4
    assert got == [
        (AT, "drift", "drift.share_drifted", 0.25, {}),
        (AT, "drift", "drift.feature.p_value", 0.01, {"feature": "x1", "test": "ks"}),
        (AT + timedelta(hours=1), "quality", "quality.n_current", None, {}),
        (AT, "gpu", "gpu.devices", 2.0, {}),
    ]


def test_production_versions_of_a_fleet_in_one_lookup(engine):
    with session_scope(engine) as session:
        ids = [registry.upsert_model(session, name=name).id for name in ("a", "b", "c")]
        for model_id, promote in zip(ids, (True, False, True)):
            version = registry.register_version(session, model_id=model_id, artifact_uri="file:///v1")
            if promote:
                registry.promote(session, version, actor="test", at=AT)
        second = registry.register_version(session, model_id=ids[2], artifact_uri="file:///v2")
        registry.promote(session, second, actor="test", at=AT + timedelta(hours=1))

        found = registry.production_versions(session, [*ids, ids[0], 999])

        assert set(found) == {ids[0], ids[2]}
        assert {model_id: found[model_id].version for model_id in found} == {ids[0]: 1, ids[2]: 2}
        assert all(found[m] is registry.production_version(session, m) for m in found)
        assert registry.production_versions(session, []) == {}
