"""stale_signal: opens when a watched sensor stops writing for stale_after, closes when fresh values arrive."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.queries import add_observations, begin_tick
from knowledge.tables import Observation, Symptom
from mape.analyze import STALE_SIGNAL, Analyzer
from mape.config import SymptomRule, default_symptom_rules
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


class Loop:
    """Writes the freshness rows of the sensors named at each tick, then runs the analyzer, like the controller."""

    record_ticks = True  # the controller's tick row (tests/analyze/conftest.py runs each test with and without)

    def __init__(self, engine, analyzer: Analyzer, models: tuple[str, ...] = ("m",)) -> None:
        self.engine = engine
        self.analyzer = analyzer
        with session_scope(engine) as session:
            self.ids = {name: registry.upsert_model(session, name=name).id for name in models}

    def tick(self, at: datetime, *sensors: str, model: str = "m"):
        metrics = {"drift": "drift.n_current", "performance": "performance.n_labelled"}
        with session_scope(self.engine) as session:
            if self.record_ticks:
                begin_tick(session, at, controller_id="test")
            add_observations(session, [Observation(time=at, model_id=self.ids[model], sensor=s, metric=metrics[s],
                                                   value=100.0, labels={}) for s in sensors])
            return self.analyzer.run(session, self.ids, at)

    def symptoms(self) -> list[Symptom]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Symptom).where(Symptom.kind == STALE_SIGNAL).order_by(Symptom.id)))

    def observation_id(self, at: datetime, metric: str) -> int:
        with session_scope(self.engine) as session:
            query = select(Observation.id).where(Observation.time == at, Observation.metric == metric)
            return session.exec(query).one()


def test_opens_when_a_sensor_wrote_nothing_for_stale_after_and_closes_when_it_writes_again(engine):
    loop = Loop(engine, Analyzer([]))  # the default: drift and performance, 30 minutes
    loop.tick(T0, "drift", "performance")
    assert loop.tick(T0 + 30 * MINUTE, "performance").model("m").opened == ()  # exactly 30 minutes old: not yet
    assert loop.symptoms() == []

    opening = loop.tick(T0 + 35 * MINUTE, "performance")

    [symptom] = loop.symptoms()
    assert [v.kind for v in opening.model("m").opened] == [STALE_SIGNAL]
    assert (symptom.status, symptom.severity, symptom.opened_at) == ("open", "warning", T0 + 35 * MINUTE)
    assert symptom.evidence["rule"] == {"stale_after_seconds": 1800.0, "sensors": ["drift", "performance"]}
    assert symptom.evidence["stale_sensors"] == ["drift"]
    assert symptom.evidence["opened_by"] == [{
        "sensor": "drift", "metric": "drift.n_current", "observation_id": loop.observation_id(T0, "drift.n_current"),
        "time": T0.isoformat(), "age_seconds": 2100.0}]

    still = loop.tick(T0 + 40 * MINUTE)  # now performance is silent too: same symptom, seen again
    [symptom] = loop.symptoms()
    assert still.model("m").opened == () and symptom.last_seen_at == T0 + 40 * MINUTE
    assert [v.kind for v in still.model("m").open] == [STALE_SIGNAL]
    assert symptom.evidence["stale_sensors"] == ["drift"]  # performance (T0 + 35 min) is 5 minutes old

    closing = loop.tick(T0 + 45 * MINUTE, "drift")

    [symptom] = loop.symptoms()
    assert [v.kind for v in closing.model("m").closed] == [STALE_SIGNAL] and closing.model("m").open == ()
    assert (symptom.status, symptom.closed_at) == ("closed", T0 + 45 * MINUTE)
    assert [(e["sensor"], e["time"]) for e in symptom.evidence["closed_by"]] == [
        ("drift", (T0 + 45 * MINUTE).isoformat()), ("performance", (T0 + 35 * MINUTE).isoformat())]
    assert loop.tick(T0 + 45 * MINUTE, "drift").model("m").opened == ()  # the same tick again changes nothing


def test_a_sensor_that_never_wrote_and_an_unwatched_one_are_not_stale(engine):
    loop = Loop(engine, Analyzer([], stale_after=timedelta(minutes=10), stale_sensors=["drift"]),
                models=("new", "watched"))
    loop.tick(T0, "performance", model="watched")  # performance is not watched here
    report = loop.tick(T0 + timedelta(hours=2), "drift", model="watched")
    assert report.model("new").open == () and report.model("watched").open == ()
    assert loop.symptoms() == []


def test_no_staleness_check_without_stale_after(engine):
    loop = Loop(engine, Analyzer([], stale_after=None))
    loop.tick(T0, "drift", "performance")
    loop.tick(T0 + timedelta(days=1))
    assert loop.symptoms() == []


def test_the_check_and_the_rules_do_not_collide():
    rule = SymptomRule(symptom=STALE_SIGNAL, metric="drift.n_current", direction="below", enter=1, exit=1)
    with pytest.raises(InvalidParameterError, match="without the kind 'stale_signal'"):
        Analyzer([rule])
    assert Analyzer([rule], stale_after=None).rules == (rule,)
    with pytest.raises(InvalidParameterError, match="The 'stale_sensors' parameter of Analyzer"):
        Analyzer([], stale_sensors=["gpu"])
    with pytest.raises(InvalidParameterError, match="The 'stale_after' parameter of Analyzer"):
        Analyzer([], stale_after=timedelta(0))


def test_a_failing_source_goes_stale_after_its_fallback_and_recovers(engine, tmp_path):
    """Monitor and Analyzer every 5 minutes; the inference log fails from 10:05 to 10:45."""
    from mape.monitor import Monitor
    from tests.monitor.test_monitor_fallback import Flaky, factory_of, write_world
    from tests.monitor.test_monitor_stage_observations import model_config, register

    write_world(tmp_path, drop_x2_from_newer_files=False)
    monitor = Monitor([model_config("churn", str(tmp_path / "log"), str(tmp_path / "labels.csv"))],
                      source_factory=factory_of(Flaky))
    analyzer = Analyzer(default_symptom_rules())
    changes: dict[str, list[str]] = {}
    Flaky.broken = False
    try:
        with session_scope(engine) as session:
            ids = {"churn": register(session, "churn")}
            for step in range(11):
                at = T0 + 5 * step * MINUTE
                Flaky.broken = 1 <= step <= 9
                monitor.run(session, ids, at)
                report = analyzer.run(session, ids, at)
                changed = report.model("churn").opened + report.model("churn").closed
                changes[at.strftime("%H:%M")] = [v.kind for v in changed]
    finally:
        Flaky.broken = False

    # fallback values at 10:05 and 10:10 (younger than 15 minutes), nothing from 10:15;
    # 10:10 + 30 minutes: stale at 10:45, fresh again at 10:50
    assert {at: kinds for at, kinds in changes.items() if STALE_SIGNAL in kinds} == {
        "10:45": [STALE_SIGNAL], "10:50": [STALE_SIGNAL]}
    [symptom] = _stale(engine)
    assert symptom.status == "closed"
    assert sorted(e["sensor"] for e in symptom.evidence["opened_by"]) == ["drift", "performance"]
    assert {e["time"] for e in symptom.evidence["opened_by"]} == {(T0 + 10 * MINUTE).isoformat()}


def _stale(engine) -> list[Symptom]:
    with session_scope(engine) as session:
        return list(session.exec(select(Symptom).where(Symptom.kind == STALE_SIGNAL)))
