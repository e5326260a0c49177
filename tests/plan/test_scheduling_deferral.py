"""Live deferral on a forecast: the planner chooses ``not_before``, moves waiting runs, and keeps the deadline."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import pytest
from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision
from mape.data.energy import EnergyMeasurement
from mape.execute import executor as executor_module
from mape.execute.executor import Executor
from mape.plan import Planner
from mape.plan.scheduling.deferral import choose_start, reconsider
from tests.plan.helpers import add_model, make_policy, observe, recording_executor

HOUR = timedelta(hours=1)
WHEN = "drift.share_drifted > 0.3"


class Grid:
    """An hourly forecast that a test can change between ticks: ``values[h]`` holds from ``start + h`` hours."""

    def __init__(self, start: datetime, values: list[float]) -> None:
        self.start, self.values, self.calls = start, list(values), 0

    def __call__(self, series: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        self.calls += 1
        if series != "carbon":
            return []
        points = [(self.start + h * HOUR, v) for h, v in enumerate(self.values)]
        if start >= self.start + len(points) * HOUR:
            return []  # past the forecast's horizon
        first = max(i for i, (t, _) in enumerate(points) if t <= start)
        return [p for p in points[first:] if p[0] < end]


@pytest.fixture
def executor(engine, tmp_path: Path) -> Executor:
    return recording_executor(engine, tmp_path)


def _deferring(**defer: object):  # type: ignore[no-untyped-def]
    return make_policy("defer-retrain", action="retrain", when=WHEN, cooldown=0,
                       defer={"earliest": "0s", "deadline": "8h", **defer})


def _tick(engine, planner, executor, at, share: float):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        model = add_model(session, "m")
        observe(session, model, at, drift__share_drifted=share)
        report = planner.plan(session, [model], at)
        executor.dispatch(session, at)
        ready = executor.runnable(session, at)
    for run_id in ready:
        executor.run(run_id, at)
    return report


def _run(engine) -> ActionRun:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        (run,) = session.exec(select(ActionRun)).all()
        return run


# ---------------------------------------------------------------------------------------------- choose_start


def test_choose_start_takes_the_lowest_window_and_records_both_forecasts(clock):
    t0 = clock()
    grid = Grid(t0, [300, 280, 120, 100, 250, 300, 300, 300, 300, 300])
    chosen = choose_start(earliest=t0, latest_start=t0 + 8 * HOUR, duration=2 * HOUR, weights={"carbon": 1.0},
                          forecast=grid)
    assert chosen.start == t0 + 2 * HOUR and chosen.predicted_saving == pytest.approx(1 - 110 / 290)
    assert chosen.record["forecast"]["run_now"] == {"carbon": 290.0}
    assert chosen.record["forecast"]["chosen"] == {"carbon": 110.0}
    assert chosen.record["start"] == (t0 + 2 * HOUR).isoformat() and chosen.record["duration"] == "2h"


def test_choose_start_never_goes_past_the_deadline(clock):
    t0 = clock()
    falling = Grid(t0, [400 - 30 * h for h in range(12)])
    chosen = choose_start(earliest=t0, latest_start=t0 + 5 * HOUR, duration=HOUR, weights={"carbon": 1.0},
                          forecast=falling)
    assert chosen.start == t0 + 5 * HOUR, "lower still later, but the deadline is the last start"


@pytest.mark.parametrize(("kwargs", "reason"), [
    (dict(forecast=None), "no forecast is configured"),
    (dict(weights={"price": 1.0}), "no price forecast is known"),
    (dict(min_saving=0.5), "the forecast saving (31.0%) is below min_saving (50.0%)"),
    (dict(forecast=lambda *a: 1 / 0), "no carbon forecast is known"),
    (dict(earliest_offset=20), "no carbon forecast is known"),
])
def test_choose_start_falls_back_to_the_earliest_time_and_says_why(clock, kwargs: dict, reason: str):
    t0 = clock()
    earliest = t0 + kwargs.pop("earliest_offset", 0) * HOUR
    request = dict(earliest=earliest, latest_start=earliest + 4 * HOUR, duration=HOUR, weights={"carbon": 1.0},
                   forecast=Grid(t0, [290, 200, 250, 280, 300, 300])) | kwargs
    chosen = choose_start(**request)  # type: ignore[arg-type]
    assert chosen.start == earliest and reason in chosen.reason


def test_reconsider_moves_only_on_a_material_change(clock):
    t0 = clock()
    grid = Grid(t0, [300, 300, 300, 200, 300, 300, 300, 300, 300, 300])
    kwargs = dict(now=t0 + HOUR, latest_start=t0 + 8 * HOUR, duration=HOUR, weights={"carbon": 1.0},
                  replan_saving=0.05)
    assert reconsider(planned=t0 + 3 * HOUR, forecast=grid, **kwargs) is None, "still the best"
    grid.values[6] = 195  # 2.5 % below the planned start: not worth a move
    assert reconsider(planned=t0 + 3 * HOUR, forecast=grid, **kwargs) is None
    grid.values[6] = 150
    moved = reconsider(planned=t0 + 3 * HOUR, forecast=grid, **kwargs)
    assert moved is not None and moved.start == t0 + 6 * HOUR
    assert moved.record["planned"] == (t0 + 3 * HOUR).isoformat() and "25.0% below the planned" in moved.reason
    assert reconsider(planned=t0 + HOUR, forecast=grid, **kwargs) is None, "due now: nothing to reconsider"


# ---------------------------------------------------------------------------------------------- the planner


def test_the_planner_schedules_a_deferred_action_in_the_lowest_window(engine, executor, clock):
    t0 = clock()
    grid = Grid(t0 - HOUR, [300, 300, 290, 280, 120, 110, 260, 300, 300, 300, 300, 300])
    planner = Planner([_deferring(duration="2h")], max_age=timedelta(minutes=30), forecast=grid)
    (decision,) = _tick(engine, planner, executor, t0, 0.5).decisions["m"]
    assert decision.not_before == t0 + 3 * HOUR and decision.deadline == t0 + 8 * HOUR
    schedule = decision.evidence["schedule"]
    assert schedule["forecast"] == {"run_now": {"carbon": 295.0}, "chosen": {"carbon": 115.0},
                                    "saving": pytest.approx(1 - 115 / 295, abs=1e-6), "candidates": 9,
                                    "truncated": False}
    assert schedule["objective"] == {"carbon": 1.0} and schedule["start"] == (t0 + 3 * HOUR).isoformat()
    run = _run(engine)
    assert run.state == "scheduled" and run.scheduled_for == t0 + 3 * HOUR
    _tick(engine, planner, executor, t0 + 3 * HOUR, 0.5)
    assert _run(engine).state == "succeeded"


def test_a_waiting_run_moves_when_the_forecast_changes_and_still_runs_by_the_deadline(engine, executor, clock):
    t0 = clock()
    grid = Grid(t0 - HOUR, [300, 300, 300, 300, 200, 300, 300, 300, 300, 300, 300, 300])
    planner = Planner([_deferring()], max_age=timedelta(minutes=30), forecast=grid)
    _tick(engine, planner, executor, t0, 0.5)
    assert _run(engine).scheduled_for == t0 + 3 * HOUR
    grid.values[8] = 100  # a windy spell forecast at +7h
    later = _tick(engine, planner, executor, t0 + HOUR, 0.5)
    assert [r.id for r in later.rescheduled] == [_run(engine).id] and later.as_dict()["rescheduled"]
    assert _run(engine).scheduled_for == t0 + 7 * HOUR
    with session_scope(engine) as session:
        (event,) = session.exec(select(AuditEvent).where(AuditEvent.kind == "action.rescheduled")).all()
    assert event.payload["from"] == (t0 + 3 * HOUR).isoformat() and event.payload["to"] == (t0 + 7 * HOUR).isoformat()
    assert "schedule" in event.payload
    grid.values = [300.0] * 6 + [500.0] * 20  # now everything later is dirtier: but the deadline is at +8h
    _tick(engine, planner, executor, t0 + 2 * HOUR, 0.5)
    assert _run(engine).scheduled_for == t0 + 2 * HOUR or _run(engine).state == "succeeded"
    assert _run(engine).state == "succeeded" and _run(engine).started_at <= t0 + 8 * HOUR


def test_a_scheduled_run_is_still_cancelled_when_its_condition_clears(engine, executor, clock):
    t0 = clock()
    grid = Grid(t0 - HOUR, [300, 300, 300, 300, 200, 300, 300, 300, 300, 300, 300, 300])
    planner = Planner([_deferring()], max_age=timedelta(minutes=30), forecast=grid)
    _tick(engine, planner, executor, t0, 0.5)
    grid.values[8] = 100
    cleared = _tick(engine, planner, executor, t0 + HOUR, 0.05)
    assert [r.state for r in cleared.cancelled] == ["cancelled"] and cleared.rescheduled == []


def test_the_forecast_is_fetched_once_per_span_in_a_pass(engine, executor, clock):
    t0 = clock()
    grid = Grid(t0 - HOUR, [300] * 12)
    planner = Planner([_deferring()], max_age=timedelta(minutes=30), forecast=grid)
    with session_scope(engine) as session:
        models = [add_model(session, name) for name in ("a", "b", "c")]
        for model in models:
            observe(session, model, t0, drift__share_drifted=0.5)
        report = planner.plan(session, models, t0)
    assert all(rows[0].not_before == t0 for rows in report.decisions.values()), "flat: no reason to wait"
    assert grid.calls == 1


def test_without_a_forecast_nothing_changes(engine, executor, clock):
    t0 = clock()
    planner = Planner([_deferring(earliest="2h")], max_age=timedelta(minutes=30))
    (decision,) = _tick(engine, planner, executor, t0, 0.5).decisions["m"]
    assert decision.not_before == t0 + 2 * HOUR and "schedule" not in decision.evidence


def test_a_metered_run_records_realised_and_forecast_emissions(engine, executor, clock, monkeypatch):
    @contextmanager
    def fake_meter() -> Iterator[EnergyMeasurement]:
        measurement = EnergyMeasurement(start=clock())
        yield measurement
        measurement.kwh, measurement.end = 2.0, measurement.start + HOUR

    monkeypatch.setattr(executor_module, "measure_energy", fake_meter)
    executor.energy_metering = True
    t0 = clock()
    grid = Grid(t0 - HOUR, [300, 300, 300, 100, 300, 300, 300, 300, 300, 300, 300, 300])
    planner = Planner([_deferring()], max_age=timedelta(minutes=30), forecast=grid)
    _tick(engine, planner, executor, t0, 0.5)
    with session_scope(engine) as session:
        observe(session, add_model(session, "m"), t0 + 2 * HOUR, carbon__intensity=120.0)
    _tick(engine, planner, executor, t0 + 2 * HOUR, 0.5)
    run = _run(engine)
    assert run.state == "succeeded" and run.energy_kwh == 2.0
    assert run.result["emissions"] == {"energy_kwh": 2.0, "realised_kg": pytest.approx(0.24),
                                       "run_now_forecast_kg": 0.6, "chosen_forecast_kg": 0.2,
                                       "planned_start": (t0 + 2 * HOUR).isoformat()}
    with session_scope(engine) as session:
        assert session.get(Decision, run.decision_id).evidence["schedule"]["forecast"]["chosen"] == {"carbon": 100.0}


def test_the_policy_fields_of_a_schedule_are_checked():
    policy = _deferring(duration="3h", objective={"carbon": 0.7, "price": 0.3}, min_saving=0.1)
    defer = policy.policy.spec.defer
    assert defer.duration == 3 * HOUR and defer.weights == {"carbon": 0.7, "price": 0.3}
    for bad, message in (({"duration": "0s"}, "must be longer than 0"), ({"objective": "water"}, "objective"),
                         ({"objective": {"carbon": 0}}, "must not all be 0"), ({"min_saving": 1.5}, "min_saving")):
        with pytest.raises(Exception) as info:
            _deferring(**bad)
        assert "spec.defer" in str(info.value) and message in str(info.value)


def test_the_controller_forecasts_from_the_configured_carbon_provider(engine, executor, clock):
    from types import SimpleNamespace

    from examples.carbon import DIURNAL_GRID
    from mape.config import CarbonConfig
    from mape.controller import Controller

    assert Controller._forecast(SimpleNamespace(settings=SimpleNamespace(carbon=None, price=None))) is None  # type: ignore[arg-type]
    holder = SimpleNamespace(settings=SimpleNamespace(carbon=CarbonConfig(provider="series", path=DIURNAL_GRID), price=None))
    forecast = Controller._forecast(holder)  # type: ignore[arg-type]
    t0 = datetime.fromisoformat("2026-03-10T00:10:00+00:00")
    steps = forecast("carbon", t0, t0 + 2 * HOUR)
    assert [t.isoformat() for t, _ in steps][:2] == ["2026-03-10T00:00:00+00:00", "2026-03-10T00:30:00+00:00"]
    assert len(steps) == 5 and forecast("price", t0, t0 + 2 * HOUR) == []
    # the planner on it: a 1h retrain that may wait 12h starts in the trace's cleanest hour, the solar dip
    planner = Planner([_deferring(deadline="12h")], max_age=timedelta(minutes=30), forecast=forecast)
    (decision,) = _tick(engine, planner, executor, t0, 0.5).decisions["m"]
    schedule = decision.evidence["schedule"]
    assert 10 <= decision.not_before.hour <= 14 and schedule["forecast"]["saving"] > 0.2
