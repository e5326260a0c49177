"""Analyzer: symptoms open after for_ticks bad values, ignore the hysteresis band, close after clear_ticks, once per tick."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.queries import add_observations, begin_tick
from knowledge.tables import Observation, Symptom
from mape.analyze import Analyzer, AnalyzeReport
from mape.config import SymptomRule
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
TICK = timedelta(minutes=5)
DRIFT = SymptomRule(symptom="data_drift", metric="drift.share_drifted", direction="above", enter=0.3, exit=0.1,
                    for_ticks=2, clear_ticks=2, severity="critical")
ACCURACY = SymptomRule(symptom="low_accuracy", metric="performance.accuracy", direction="below", enter=0.8,
                       exit=0.85, for_ticks=1, clear_ticks=1)


class Loop:
    """Writes one observation per tick and runs the analyzer at that tick, like the controller does."""

    record_ticks = True  # the controller's tick row (tests/analyze/conftest.py runs each test with and without)

    def __init__(self, engine, rules: list[SymptomRule], models: tuple[str, ...] = ("m",)) -> None:
        self.engine = engine
        self.analyzer = Analyzer(rules)
        self.tick = 0
        with session_scope(engine) as session:
            self.ids = {name: registry.upsert_model(session, name=name).id for name in models}

    @property
    def at(self) -> datetime:
        return T0 + self.tick * TICK

    def step(self, values: dict[str, float | None], *, model: str = "m", labels: dict | None = None) -> AnalyzeReport:
        self.tick += 1
        with session_scope(self.engine) as session:
            if self.record_ticks:
                begin_tick(session, self.at, controller_id="test")
            add_observations(session, [
                Observation(time=self.at, model_id=self.ids[model], sensor="test", metric=metric, value=value,
                            labels=labels or {})
                for metric, value in values.items()
            ])
            return self.analyzer.run(session, self.ids, self.at)

    def rerun(self) -> AnalyzeReport:
        with session_scope(self.engine) as session:
            return self.analyzer.run(session, self.ids, self.at)

    def symptoms(self, kind: str = "data_drift") -> list[Symptom]:
        with session_scope(self.engine) as session:
            return list(session.exec(select(Symptom).where(Symptom.kind == kind).order_by(Symptom.id)))


def drift(loop: Loop, *values: float | None) -> list[AnalyzeReport]:
    return [loop.step({"drift.share_drifted": v}) for v in values]


def test_opens_only_after_for_ticks_consecutive_bad_values(engine):
    loop = Loop(engine, [DRIFT])

    reports = drift(loop, 0.5, 0.05, 0.5)
    assert loop.symptoms() == []
    assert all(r.model("m").opened == () for r in reports)

    report = drift(loop, 0.3)[0]  # exactly at enter counts as bad

    [symptom] = loop.symptoms()
    assert [v.id for v in report.model("m").opened] == [symptom.id]
    assert (symptom.status, symptom.severity) == ("open", "critical")
    assert symptom.opened_at == symptom.last_seen_at == loop.at
    assert symptom.evidence["rule"] == {"metric": "drift.share_drifted", "direction": "above", "enter": 0.3,
                                        "exit": 0.1, "for_ticks": 2, "clear_ticks": 2}
    opened_by = symptom.evidence["opened_by"]
    assert [e["value"] for e in opened_by] == [0.5, 0.3]
    assert opened_by[-1]["time"] == loop.at.isoformat()
    with session_scope(engine) as session:
        ids = [o.id for o in session.exec(select(Observation).order_by(Observation.id))]
    assert [e["observation_id"] for e in opened_by] == ids[-2:]


def test_values_between_exit_and_enter_neither_open_nor_close(engine):
    loop = Loop(engine, [DRIFT])
    drift(loop, 0.2, 0.25, 0.29, 0.15)  # in the band: never opens
    assert loop.symptoms() == []

    drift(loop, 0.4, 0.35)  # opens
    hovering = drift(loop, 0.2, 0.12, 0.28, 0.1, 0.25, 0.11)  # in the band (0.1 is still on the bad side)

    [symptom] = loop.symptoms()
    assert symptom.status == "open"
    assert symptom.last_seen_at == loop.at
    assert all(r.model("m").closed == () and r.model("m").opened == () for r in hovering)
    assert [v.kind for v in hovering[-1].model("m").open] == ["data_drift"]


def test_closes_after_clear_ticks_good_values(engine):
    loop = Loop(engine, [DRIFT])
    drift(loop, 0.5, 0.5)
    opened_at = loop.at

    first_good = drift(loop, 0.05)[0]
    assert loop.symptoms()[0].status == "open"
    assert loop.symptoms()[0].last_seen_at == opened_at  # a good value does not refresh it
    assert first_good.model("m").closed == ()

    second_good = drift(loop, 0.0)[0]

    [symptom] = loop.symptoms()
    assert (symptom.status, symptom.closed_at) == ("closed", loop.at)
    assert [e["value"] for e in symptom.evidence["closed_by"]] == [0.05, 0.0]
    assert [e["value"] for e in symptom.evidence["opened_by"]] == [0.5, 0.5]
    assert [v.id for v in second_good.model("m").closed] == [symptom.id]
    assert second_good.model("m").open == ()

    drift(loop, 0.9)  # one bad value after closing is not yet a new symptom
    assert len(loop.symptoms()) == 1
    drift(loop, 0.9)
    assert [s.status for s in loop.symptoms()] == ["closed", "open"]


def test_running_the_same_tick_twice_changes_nothing(engine):
    loop = Loop(engine, [DRIFT])
    drift(loop, 0.5, 0.5)

    again = loop.rerun()

    assert len(loop.symptoms()) == 1
    assert again.model("m").opened == ()
    assert len(again.model("m").open) == 1

    drift(loop, 0.0, 0.0)
    loop.rerun()
    assert [s.status for s in loop.symptoms()] == ["closed"]


def test_no_data_values_are_skipped_and_never_good_or_bad(engine):
    loop = Loop(engine, [DRIFT])
    drift(loop, 0.5, None)  # no data this tick: nothing happens
    assert loop.symptoms() == []

    drift(loop, 0.6)  # 0.5 and 0.6 are the two newest values
    [symptom] = loop.symptoms()
    assert [e["value"] for e in symptom.evidence["opened_by"]] == [0.5, 0.6]

    seen = symptom.last_seen_at
    drift(loop, None, None)
    assert loop.symptoms()[0].last_seen_at == seen
    assert loop.symptoms()[0].status == "open"


def test_a_tick_without_its_own_observation_changes_nothing(engine):
    loop = Loop(engine, [DRIFT])
    drift(loop, 0.5, 0.5)
    seen = loop.symptoms()[0].last_seen_at

    loop.step({"performance.accuracy": 0.99})  # this tick has no drift observation: the last ones are stale

    assert loop.symptoms()[0].last_seen_at == seen
    assert loop.symptoms()[0].status == "open"


def test_rows_with_labels_are_not_summary_values(engine):
    loop = Loop(engine, [DRIFT])
    loop.step({"drift.share_drifted": 0.9}, labels={"feature": "x"})
    loop.step({"drift.share_drifted": 0.9}, labels={"feature": "x"})

    assert loop.symptoms() == []


def test_direction_below(engine):
    loop = Loop(engine, [ACCURACY])

    loop.step({"performance.accuracy": 0.82})  # in the band
    assert loop.symptoms("low_accuracy") == []
    loop.step({"performance.accuracy": 0.8})
    assert [s.status for s in loop.symptoms("low_accuracy")] == ["open"]
    loop.step({"performance.accuracy": 0.85})  # exit itself is not yet good
    assert [s.status for s in loop.symptoms("low_accuracy")] == ["open"]
    loop.step({"performance.accuracy": 0.86})
    assert [s.status for s in loop.symptoms("low_accuracy")] == ["closed"]


def test_models_and_rules_are_independent(engine):
    loop = Loop(engine, [DRIFT, ACCURACY], models=("a", "b"))
    at = T0 + TICK
    values = {"a": {"drift.share_drifted": 0.9, "performance.accuracy": 0.5},
              "b": {"drift.share_drifted": 0.0, "performance.accuracy": 0.95}}
    with session_scope(engine) as session:
        add_observations(session, [
            Observation(time=at, model_id=loop.ids[model], sensor="test", metric=metric, value=value, labels={})
            for model, metrics in values.items() for metric, value in metrics.items()
        ])
        report = loop.analyzer.run(session, loop.ids, at)

    assert [v.kind for v in report.model("a").opened] == ["low_accuracy"]  # drift needs a second bad tick
    assert [v.kind for v in report.model("a").open] == ["low_accuracy"]
    assert report.model("b").opened == () and report.model("b").open == ()
    assert "model a: opened low_accuracy (warning)" in str(report)
    assert report.as_dict()["opened"] == ["a: low_accuracy (warning)"]
    assert report.as_dict()["models"]["b"] == {"opened": [], "closed": [], "open": []}


def test_rules_with_the_same_kind_are_refused():
    with pytest.raises(InvalidParameterError, match="The 'rules' parameter of Analyzer must be a sequence of rules"):
        Analyzer([DRIFT, DRIFT.model_copy(update={"metric": "drift.min_q_value"})])


def test_a_sparse_series_is_read_as_deep_as_it_needs(engine):
    """A sensor that reports every few ticks: the last ticks hold one value, the rule needs two, the series has them."""
    loop = Loop(engine, [DRIFT])
    loop.step({"drift.share_drifted": 0.5})
    for _ in range(5):
        loop.step({"performance.accuracy": 0.9})  # other sensors write; drift does not

    report = drift(loop, 0.6)[0]

    [symptom] = loop.symptoms()
    assert [v.id for v in report.model("m").opened] == [symptom.id]
    assert [e["value"] for e in symptom.evidence["opened_by"]] == [0.5, 0.6]


def test_a_pass_reads_the_same_few_times_for_any_fleet_size(engine, analyze_reads):
    from sqlalchemy import event

    def statements(n_models: int) -> int:
        loop = Loop(engine, [DRIFT, ACCURACY], models=tuple(f"n{n_models}-{k}" for k in range(n_models)))
        for value in (0.05, 0.5, 0.5):
            loop.tick += 1
            with session_scope(engine) as session:
                if loop.record_ticks:
                    begin_tick(session, loop.at, controller_id=f"fleet-{n_models}")
                add_observations(session, [
                    Observation(time=loop.at, model_id=model_id, sensor="test", metric=metric, value=v, labels={})
                    for model_id in loop.ids.values()
                    for metric, v in (("drift.share_drifted", value), ("performance.accuracy", 0.9),
                                      ("drift.n_current", 500.0), ("performance.n_labelled", 500.0))])
        seen: list[str] = []

        def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
            if statement.lstrip().upper().startswith("SELECT"):
                seen.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        try:
            with session_scope(engine) as session:
                report = loop.analyzer.run(session, loop.ids, loop.at)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert all([v.kind for v in m.opened] == ["data_drift"] for m in report.models)
        return len(seen)

    small, large = statements(3), statements(30)
    if analyze_reads == "fleet-reads":
        assert small == large <= 4  # tick times, the rows of the last ticks, the open symptoms (and no more)
    else:
        assert large > 5 * small  # each series on its own
