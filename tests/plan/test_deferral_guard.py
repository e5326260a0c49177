"""The live deferral guard: shadow searches are stored and scored, and deferral waits only for gains that come true.

Knowledge bases are real (SQLite file and PostgreSQL, through the ``engine``
fixture); the actuals are ``carbon.intensity`` observations as the Monitor
stores them every tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlmodel import col, select

from knowledge import forecasts
from knowledge.database import session_scope
from knowledge.tables import DeferralShadow, ShadowStatus
from mape.errors import InvalidParameterError
from mape.plan import Planner
from mape.plan.forecast_guard import ForecastGuard, shadow_row
from mape.plan.scheduling.deferral import choose_start, reconsider
from mape.plan.scheduling.recent_error import MIN_SHADOWS, Evidence
from mape.plan.scheduling.shadow import realised_gain, search_key, shadow_search
from tests.plan.helpers import add_model, make_policy, observe

HOUR = timedelta(hours=1)
WHEN = "drift.share_drifted > 0.3"
KEY = "carbon 1h +0s..8h"


def dip(at: datetime) -> float:
    """A grid with a clean hour every six (03:00, 09:00, ...): any 8 h of slack holds one."""
    return 100.0 if at.hour % 6 == 3 else 300.0


def flat(at: datetime) -> float:
    return 300.0


class Hourly:
    """A forecast of hourly steps ``shape(hour)``, from the hour in force at ``start`` until ``end``."""

    def __init__(self, shape: Callable[[datetime], float]) -> None:
        self.shape, self.calls = shape, 0

    def __call__(self, series: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        self.calls += 1
        if series != "carbon":
            return []
        at = start.replace(minute=0, second=0, microsecond=0)
        points = []
        while at < end:
            points.append((at, self.shape(at)))
            at += HOUR
        return points


def _policy(name: str = "defer-retrain", **defer: object):  # type: ignore[no-untyped-def]
    return make_policy(name, action="retrain", when=WHEN, cooldown=0,
                       defer={"earliest": "0s", "deadline": "8h", **defer})


def _history(engine, planner: Planner, start: datetime, hours: int,  # type: ignore[no-untyped-def]
             actual: Callable[[datetime], float | None] | None, *, every: int = 1) -> None:
    """``hours`` hourly ticks in which nothing fires; the Monitor's ``carbon.intensity`` every ``every`` hours."""
    for hour in range(hours):
        at = start + hour * HOUR
        with session_scope(engine) as session:
            model = add_model(session, "m")
            if actual is not None and hour % every == 0:
                observe(session, model, at, carbon__intensity=actual(at))
            observe(session, model, at, drift__share_drifted=0.0)
            planner.plan(session, [model], at)


def _decide(engine, planner: Planner, at: datetime,  # type: ignore[no-untyped-def]
            actual: Callable[[datetime], float] | None = None):
    with session_scope(engine) as session:
        model = add_model(session, "m")
        if actual is not None:
            observe(session, model, at, carbon__intensity=actual(at))
        observe(session, model, at, drift__share_drifted=0.5)
        (decision,) = planner.plan(session, [model], at).decisions["m"]
        return decision


def _shadows(engine) -> list[DeferralShadow]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return list(session.exec(select(DeferralShadow).order_by(col(DeferralShadow.issued_at))))


# ---------------------------------------------------------------------------------------------- stored and scored


def test_a_shadow_search_is_stored_every_hour_and_scored_on_the_observed_intensity(engine, clock):
    t0 = clock()
    planner = Planner([_policy()], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 12, actual=flat)
    rows = _shadows(engine)
    assert [r.issued_at for r in rows] == [t0 + h * HOUR for h in range(12)] and {r.key for r in rows} == {KEY}
    first = rows[0]  # at 00:00: the clean hour is 03:00, forecast 200 g below starting at once
    assert first.chosen_start == t0 + 3 * HOUR and first.due_at == t0 + 4 * HOUR
    assert first.predicted_gain == pytest.approx(200.0) and first.predicted["scale"] == {"carbon": 1.0}
    assert first.status == ShadowStatus.scored.value and first.realised_gain == pytest.approx(0.0)
    assert first.actual == {"run_now": {"carbon": 300.0}, "chosen": {"carbon": 300.0}}
    at_dip = rows[3]  # at 03:00 the clean hour is now: no gain predicted, none realised, no actuals needed
    assert at_dip.predicted_gain == 0 and at_dip.realised_gain == 0 and at_dip.actual == {"run_now": {}, "chosen": {}}
    assert rows[-1].status == ShadowStatus.pending.value, "its windows have not passed"


def test_a_repeated_tick_and_ticks_within_the_hour_add_no_second_search(engine, clock):
    t0 = clock()
    planner = Planner([_policy(), _policy("other", min_saving=0.1)], max_age=timedelta(minutes=30),
                      forecast=Hourly(dip))
    for at in (t0, t0, t0 + timedelta(minutes=20), t0 + timedelta(minutes=40), t0 + HOUR):
        with session_scope(engine) as session:
            planner.plan(session, [add_model(session, "m")], at)
    assert [r.issued_at for r in _shadows(engine)] == [t0, t0 + HOUR], "one kind of search, one an hour"


def test_policies_without_a_guard_record_nothing(engine, clock):
    planner = Planner([_policy(guard="none")], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, clock(), 3, actual=flat)
    assert _shadows(engine) == []


def test_old_shadow_searches_are_pruned(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        old = shadow_search(key=KEY, issued_at=t0 - timedelta(days=40), earliest=t0 - timedelta(days=40),
                            latest_start=t0 - timedelta(days=40) + 8 * HOUR, duration=HOUR, weights={"carbon": 1.0},
                            forecast=Hourly(dip))
        assert old is not None
        assert forecasts.add_shadow(session, shadow_row(old)) and not forecasts.add_shadow(session, shadow_row(old))
    planner = Planner([_policy()], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 1, actual=flat)
    assert [r.issued_at for r in _shadows(engine)] == [t0]


# ---------------------------------------------------------------------------------------------- the guard decides


def test_a_forecaster_whose_gains_never_come_true_stops_deferring(engine, clock):
    t0 = clock()
    planner = Planner([_policy()], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 24, actual=flat)  # the dip is forecast, the grid stays at 300
    decision = _decide(engine, planner, t0 + 24 * HOUR, flat)
    assert decision.not_before == t0 + 24 * HOUR, "no deferral"
    guard = decision.evidence["schedule"]["guard"]
    assert guard["kind"] == "recent_error" and guard["scored"] >= MIN_SHADOWS
    assert guard["predicted_gain"] == pytest.approx(200.0) and guard["recent_error"] == pytest.approx(200.0)
    assert guard["expected_gain"] == pytest.approx(0.0)
    reason = decision.evidence["schedule"]["reason"]
    assert reason.startswith("the predicted gain (200) does not exceed the forecaster's recent error (200, from ")
    assert f"from {guard['scored']} scored searches" in reason


def test_the_same_forecaster_defers_without_the_guard(engine, clock):
    t0 = clock()
    planner = Planner([_policy(guard="none")], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 24, actual=flat)
    decision = _decide(engine, planner, t0 + 24 * HOUR, flat)
    assert decision.not_before == t0 + 27 * HOUR and "guard" not in decision.evidence["schedule"]


@pytest.mark.parametrize("guard", ["recent_error", "strict"])
def test_a_forecaster_whose_gains_come_true_keeps_deferring(engine, clock, guard: str):
    t0 = clock()
    planner = Planner([_policy(guard=guard)], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 24, actual=dip)
    decision = _decide(engine, planner, t0 + 24 * HOUR, dip)
    assert decision.not_before == t0 + 27 * HOUR
    schedule = decision.evidence["schedule"]
    assert schedule["guard"]["recent_error"] == pytest.approx(0.0) and schedule["guard"]["scored"] >= MIN_SHADOWS
    assert schedule["guard"]["expected_gain"] == pytest.approx(200.0)
    assert "the predicted gain 200 exceeds the recent error 0, from" in schedule["reason"]


def test_without_evidence_recent_error_trusts_the_forecast_and_says_so(engine, clock):
    t0 = clock()
    planner = Planner([_policy()], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    decision = _decide(engine, planner, t0)
    assert decision.not_before == t0 + 3 * HOUR
    schedule = decision.evidence["schedule"]
    assert schedule["guard"] == {"kind": "recent_error", "predicted_gain": 200.0, "recent_error": None, "scored": 0,
                                 "needed": MIN_SHADOWS, "neighbours": 0, "expected_gain": None}
    assert schedule["reason"].endswith(
        "(66.7% below starting at the earliest time; no evidence of the forecaster's recent error yet: "
        "0 of 10 scored searches)")


def test_strict_starts_at_the_earliest_time_until_there_is_evidence(engine, clock):
    t0 = clock()
    planner = Planner([_policy(guard="strict")], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    decision = _decide(engine, planner, t0)
    assert decision.not_before == t0
    assert decision.evidence["schedule"]["reason"] == (
        "no evidence of the forecaster's recent error yet (0 of 10 scored searches): start at the earliest time")


def test_min_saving_still_applies_with_good_evidence(engine, clock):
    t0 = clock()
    planner = Planner([_policy(min_saving=0.8)], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 24, actual=dip)
    decision = _decide(engine, planner, t0 + 24 * HOUR, dip)
    assert decision.not_before == t0 + 24 * HOUR
    assert "below min_saving (80.0%)" in decision.evidence["schedule"]["reason"]


# ---------------------------------------------------------------------------------------------- bad actuals


@pytest.mark.parametrize(("actual", "every"), [(None, 1), (flat, 4), (lambda at: math.nan, 1)],
                         ids=["no observations", "observations 4h apart", "not a number"])
def test_searches_without_good_actuals_are_left_unscored_and_then_given_up(engine, clock, actual, every: int):
    t0 = clock()
    planner = Planner([_policy()], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 12, actual=actual, every=every)
    rows = _shadows(engine)
    first = rows[0]  # due at 04:00: pending until 10:00, then given up
    assert first.status == ShadowStatus.unscorable.value and first.realised_gain is None
    assert first.note == ("no actual carbon covered the windows from 2026-01-05T00:00:00+00:00 and "
                          "2026-01-05T03:00:00+00:00 within 6h of their end")
    assert first.scored_at == t0 + 10 * HOUR
    assert rows[3].status == ShadowStatus.scored.value and rows[3].realised_gain == 0, "no gain: nothing to observe"
    assert rows[6].status == ShadowStatus.pending.value, "due at 10:00: still waiting for its actuals"
    decision = _decide(engine, planner, t0 + 12 * HOUR)
    assert decision.not_before == t0 + 15 * HOUR, "no evidence: the forecast alone decides"
    assert decision.evidence["schedule"]["guard"]["recent_error"] is None


def test_a_missing_observation_now_and_then_is_bridged(engine, clock):
    t0 = clock()
    planner = Planner([_policy()], max_age=timedelta(minutes=30), forecast=Hourly(dip))
    _history(engine, planner, t0, 8, actual=dip, every=2)  # 2 h apart: each value holds until the next
    first = _shadows(engine)[0]
    assert first.status == ShadowStatus.scored.value and first.actual["chosen"] == {"carbon": 300.0}


# ---------------------------------------------------------------------------------------------- the search itself


def test_a_waiting_run_moves_only_for_an_improvement_the_evidence_believes(clock):
    t0 = clock()
    forecast = Hourly(lambda at: 150.0 if at == t0 + 6 * HOUR else 300.0 if at != t0 + 3 * HOUR else 280.0)
    kwargs = dict(planned=t0 + 3 * HOUR, now=t0 + HOUR, latest_start=t0 + 8 * HOUR, duration=HOUR,
                  weights={"carbon": 1.0}, forecast=forecast, replan_saving=0.05)
    assert reconsider(**kwargs).start == t0 + 6 * HOUR  # type: ignore[arg-type,union-attr]
    doubtful = Evidence.from_rows((t0 - d * 24 * HOUR + HOUR, 130.0, 0.0) for d in range(1, 13))
    assert reconsider(**kwargs, guard="recent_error", evidence=doubtful) is None  # type: ignore[arg-type]
    assert reconsider(**kwargs, guard="strict") is None  # type: ignore[arg-type]
    believed = Evidence.from_rows((t0 - d * 24 * HOUR + HOUR, 130.0, 125.0) for d in range(1, 13))
    moved = reconsider(**kwargs, guard="recent_error", evidence=believed)  # type: ignore[arg-type]
    assert moved is not None and moved.record["guard"]["recent_error"] == pytest.approx(5.0)
    assert "(the predicted gain 130 exceeds the recent error 5, from 12 scored searches)" in moved.reason


def test_a_mix_is_scored_on_the_scale_it_was_searched_on(clock):
    t0 = clock()
    carbon = [300, 280, 120, 100, 250, 300]
    price = [50, 90, 80, 10, 60, 70]

    def forecast(series: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        values = carbon if series == "carbon" else price
        return [(t0 + h * HOUR, float(v)) for h, v in enumerate(values)]

    weights = {"carbon": 0.7, "price": 0.3}
    shadow = shadow_search(key=search_key(weights, 2 * HOUR, timedelta(0), 4 * HOUR), issued_at=t0, earliest=t0,
                           latest_start=t0 + 4 * HOUR, duration=2 * HOUR, weights=weights, forecast=forecast)
    assert shadow is not None and shadow.key == "carbon=0.7,price=0.3 2h +0s..4h"
    assert shadow.predicted_gain == pytest.approx(sum(
        shadow.scale[name] * (shadow.run_now[name] - shadow.chosen[name]) for name in weights))
    assert set(shadow.scale) == {"carbon", "price"} and shadow.scale["carbon"] != 0.7, "normalised by its mean"

    def perfect(series: str, start: datetime, end: datetime) -> float:
        values = carbon if series == "carbon" else price
        hour = int((start - t0) / HOUR)
        return sum(values[hour:hour + 2]) / 2

    gain, means = realised_gain(predicted_gain=shadow.predicted_gain, earliest=t0, chosen_start=shadow.chosen_start,
                                duration=2 * HOUR, scale=shadow.scale, actual=perfect)
    assert gain == pytest.approx(shadow.predicted_gain) and means["chosen"] == pytest.approx(shadow.chosen)


def test_the_guard_checks_its_parameters():
    with pytest.raises(InvalidParameterError, match=r"The 'retention' parameter of ForecastGuard must be at least "
                                                    r"the lookback \(4w\). Got '1d' instead."):
        ForecastGuard(retention=timedelta(days=1))
    with pytest.raises(InvalidParameterError, match="The 'cadence' parameter of ForecastGuard must be longer than 0"):
        ForecastGuard(cadence=timedelta(0))


def test_the_policy_field_is_checked():
    with pytest.raises(Exception) as info:
        _policy(guard="sometimes")
    assert "spec.defer.guard" in str(info.value)
    assert _policy().policy.spec.defer.guard == "recent_error"


def test_choose_start_guard_matches_the_backtest_rule(clock):
    """Deferral iff the predicted gain exceeds the recent error, as in the backtest."""
    t0 = clock()
    forecast = Hourly(dip)
    for realised, deferred in ((0.0, False), (-50.0, False), (200.0, True), (150.0, True)):
        evidence = Evidence.from_rows((t0 - d * 24 * HOUR, 200.0, realised) for d in range(1, 13))
        chosen = choose_start(earliest=t0, latest_start=t0 + 8 * HOUR, duration=HOUR, weights={"carbon": 1.0},
                              forecast=forecast, guard="recent_error", evidence=evidence)
        assert (chosen.start > t0) is deferred, realised


# ---------------------------------------------------------------------------------------------- on a real trace


@pytest.mark.parametrize("inverted", [False, True], ids=["the trace itself", "the trace upside down"])
def test_on_the_shipped_trace_a_perfect_forecast_realises_its_gains_and_a_wrong_one_stops(sqlite_engine,
                                                                                          inverted: bool):
    """The controller's forecast (the ``series`` provider) and the Monitor's carbon sensor on the same trace."""
    from types import SimpleNamespace

    from examples.carbon import DIURNAL_GRID
    from knowledge import queries
    from mape.config import CarbonConfig
    from mape.controller import Controller
    from mape.monitor.carbon import CarbonSensor, carbon_observations
    from mape.monitor.carbon.series import SeriesProvider

    holder = SimpleNamespace(settings=SimpleNamespace(carbon=CarbonConfig(provider="series", path=DIURNAL_GRID),
                                                      price=None))
    trace = Controller._forecast(holder)  # type: ignore[arg-type]
    assert trace is not None

    def forecast(series: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return [(t, 500.0 - v if inverted else v) for t, v in trace(series, start, end)]

    sensor = CarbonSensor(SeriesProvider(DIURNAL_GRID))
    planner = Planner([_policy(deadline="12h")], max_age=timedelta(minutes=30), forecast=forecast)
    t0 = datetime.fromisoformat("2026-03-10T00:00:00+00:00")
    for step in range(2 * 30 + 1):
        at = t0 + step * timedelta(minutes=30)
        with session_scope(sqlite_engine) as session:
            model = add_model(session, "m")
            queries.add_observations(session, carbon_observations(model.id, at, sensor.measure(at)))
            observe(session, model, at, drift__share_drifted=0.5 if step == 2 * 30 else 0.0)
            report = planner.plan(session, [model], at)
    scored = [r for r in _shadows(sqlite_engine) if r.status == ShadowStatus.scored.value]
    assert len(scored) >= MIN_SHADOWS
    (decision,) = report.decisions["m"]
    guard = decision.evidence["schedule"]["guard"]
    if not inverted:
        assert all(r.realised_gain == pytest.approx(r.predicted_gain, abs=1e-6) for r in scored)
        assert decision.not_before > at and guard["predicted_gain"] > guard["recent_error"]
    else:
        assert sum(r.realised_gain for r in scored) < 0, "the forecast dips where the grid peaks"
        assert guard["expected_gain"] < 0
        assert decision.not_before == at and guard["predicted_gain"] <= guard["recent_error"]
