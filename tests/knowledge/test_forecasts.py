"""Shadow searches of live deferral in the knowledge base: stored once, scored, read back, pruned; and actuals."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from sqlmodel import select

from knowledge import forecasts, queries, registry
from knowledge.database import session_scope
from knowledge.tables import DeferralShadow, Observation, ShadowStatus

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def _shadow(key: str, issued: datetime, gain: float = 100.0) -> DeferralShadow:
    return DeferralShadow(key=key, issued_at=issued, objective={"carbon": 1.0}, earliest=issued,
                          latest_start=issued + 8 * HOUR, duration_s=3600.0, chosen_start=issued + 2 * HOUR,
                          due_at=issued + 3 * HOUR, predicted_gain=gain, predicted={"scale": {"carbon": 1.0}})


def test_shadows_are_stored_once_scored_and_read_back_by_key(engine):
    with session_scope(engine) as session:
        for hour in range(4):
            assert forecasts.add_shadow(session, _shadow("a", T0 + hour * HOUR, gain=10.0 * hour))
        assert forecasts.add_shadow(session, _shadow("b", T0))
        assert not forecasts.add_shadow(session, _shadow("a", T0))
    with session_scope(engine) as session:
        assert forecasts.last_shadow_times(session, ["a", "b", "c"]) == {"a": T0 + 3 * HOUR, "b": T0}
        due = forecasts.due_shadows(session, T0 + 4 * HOUR)
        assert [(s.key, s.issued_at) for s in due] == [("a", T0), ("b", T0), ("a", T0 + HOUR)]
        forecasts.score_shadow(due[0], T0 + 4 * HOUR, realised_gain=-5.0, actual={"run_now": {"carbon": 1.0}})
        forecasts.score_shadow(due[1], T0 + 4 * HOUR, realised_gain=None, note="no actual carbon")
        forecasts.score_shadow(due[2], T0 + 4 * HOUR, realised_gain=7.0)
    with session_scope(engine) as session:
        assert forecasts.due_shadows(session, T0 + 4 * HOUR) == []
        assert forecasts.scored_shadows(session, ["a", "b"], since=T0, until=T0 + 4 * HOUR) == {
            "a": [(T0, 0.0, -5.0), (T0 + HOUR, 10.0, 7.0)]}
        assert forecasts.scored_shadows(session, ["a"], since=T0 + HOUR, until=T0 + 4 * HOUR) == {
            "a": [(T0 + HOUR, 10.0, 7.0)]}
        assert forecasts.scored_shadows(session, ["a"], since=T0, until=T0 + 3 * HOUR) == {
            "a": [(T0, 0.0, -5.0)]}, "not yet due at the time asked for: left out"
        unscorable = session.exec(select(DeferralShadow).where(DeferralShadow.key == "b")).one()
        assert unscorable.status == ShadowStatus.unscorable.value and unscorable.note == "no actual carbon"


def test_old_shadows_are_pruned(engine):
    with session_scope(engine) as session:
        for hour in range(3):
            forecasts.add_shadow(session, _shadow("a", T0 + hour * HOUR))
    with session_scope(engine) as session:
        assert forecasts.prune_shadows(session, T0 + 2 * HOUR) == 2
    with session_scope(engine) as session:
        assert [s.issued_at for s in session.exec(select(DeferralShadow))] == [T0 + 2 * HOUR]


def test_the_observed_series_is_one_finite_value_per_time_across_the_fleet(engine):
    with session_scope(engine) as session:
        ids = [registry.upsert_model(session, name=name, labels={}, training_entrypoint="pkg.mod:train").id
               for name in ("a", "b")]
        rows = []
        for model_id in ids:
            rows += [Observation(time=T0 + h * HOUR, model_id=model_id, sensor="carbon", metric="carbon.intensity",
                                 value=200.0 + h) for h in range(3)]
        rows += [Observation(time=T0 + 3 * HOUR, model_id=ids[0], sensor="carbon", metric="carbon.intensity",
                             value=None),
                 Observation(time=T0 + 4 * HOUR, model_id=ids[0], sensor="carbon", metric="carbon.intensity",
                             value=math.inf),
                 Observation(time=T0 + HOUR, model_id=ids[0], sensor="carbon", metric="carbon.forecast_min", value=1.0)]
        queries.add_observations(session, rows)
    with session_scope(engine) as session:
        assert forecasts.observed_series(session, "carbon.intensity", ids, T0 + HOUR, T0 + 5 * HOUR) == [
            (T0 + HOUR, 201.0), (T0 + 2 * HOUR, 202.0)]
        assert forecasts.observed_series(session, "carbon.intensity", [], T0, T0 + 5 * HOUR) == []
