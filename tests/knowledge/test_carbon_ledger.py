"""The carbon ledger's reads, on SQLite and PostgreSQL: sums per action kind, savings, deferral windows, series, GPUs.

:func:`add_carbon_history` is also the Carbon page's test data
(``tests/dashboard/test_carbon_page.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from knowledge import carbon_ledger as ledger
from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision, DeferralShadow, observation_row
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
DAY = (T0, T0 + timedelta(days=1))


def _run(session: Session, model_id: int, key: str, action: str, *, finished: datetime, energy: float | None = None,
         kg: float | None = None, forecast: tuple[float, float] | None = None,
         schedule: dict[str, Any] | None = None, not_before: datetime | None = None) -> ActionRun:
    """A succeeded run and its decision; ``forecast`` is the (run-now, chosen) forecast kg of ``result.emissions``."""
    evidence = {"schedule": schedule} if schedule is not None else {}
    decision = Decision(model_id=model_id, policy_name="p", action=action, status="proposed", dedup_key=key,
                        evidence=evidence, not_before=not_before, created_at=finished - timedelta(hours=6))
    session.add(decision)
    session.flush()
    result: dict[str, Any] = {}
    if forecast is not None:
        result["emissions"] = {"energy_kwh": energy, "realised_kg": kg, "run_now_forecast_kg": forecast[0],
                               "chosen_forecast_kg": forecast[1]}
    run = ActionRun(decision_id=decision.id, model_id=model_id, action=action, idempotency_key=key, state="succeeded",
                    started_at=finished - timedelta(hours=1), finished_at=finished, energy_kwh=energy,
                    emissions_kg=kg, result=result)
    session.add(run)
    session.flush()
    return run


def _schedule(earliest: datetime, start: datetime, duration: str) -> dict[str, Any]:
    return {"earliest": earliest.isoformat(), "start": start.isoformat(), "duration": duration, "reason": "r"}


def add_carbon_history(session: Session) -> None:
    """A day from T0 of a fleet of two models: action runs with energy and emissions, intensity, GPUs, shadows.

    In the day: three retrain runs (two deferred and compared: run-now
    forecasts 0.6 and 0.2 kg, realised 0.4 and 0.25 kg; one not metered) and
    one metered rollback without a forecast; a retrain ten days earlier.
    Intensity every 30 minutes, ``100 + 10 * hour`` g on both models. GPU-a
    reads utilization 0.5 and 0.7 alternately and memory 0.25; GPU-b (a MIG
    instance) memory 0.5 only. Three scored shadows and one pending.
    """
    first = registry.upsert_model(session, name="credit-risk")
    second = registry.upsert_model(session, name="fraud")
    a, b = first.id, second.id
    assert a is not None and b is not None
    h = lambda hours: T0 + timedelta(hours=hours)  # noqa: E731
    _run(session, a, "deferred-1", "retrain", finished=h(6), energy=2.0, kg=0.4, forecast=(0.6, 0.36),
         schedule=_schedule(h(1), h(4), "2h"), not_before=h(4))
    _run(session, b, "deferred-2", "retrain", finished=h(14), energy=1.0, kg=0.25, forecast=(0.2, 0.15),
         schedule=_schedule(h(10), h(13), "1h"), not_before=h(13))
    _run(session, a, "unmetered", "retrain", finished=h(8))
    _run(session, b, "rollback", "rollback", finished=h(9), energy=0.5, kg=0.1)
    _run(session, a, "earlier", "retrain", finished=h(-240), energy=9.0, kg=9.0, forecast=(9.0, 9.0))
    _run(session, a, "at-once", "retrain", finished=h(30), energy=1.0, kg=0.3, forecast=(0.3, 0.3),
         schedule=_schedule(h(20), h(20), "1h"), not_before=h(20))  # the forecast was lowest at once
    rows = []
    for step in range(48):
        at = T0 + timedelta(minutes=30 * step)
        for model_id in (a, b):
            rows.append(observation_row(time=at, model_id=model_id, sensor="carbon", metric="carbon.intensity",
                                        value=100.0 + 10 * at.hour))
        rows += [observation_row(time=at, model_id=a, sensor="gpu", metric="gpu.device.utilization",
                                 value=0.5 if step % 2 == 0 else 0.7, labels={"device": "GPU-a"}),
                 observation_row(time=at, model_id=a, sensor="gpu", metric="gpu.device.memory_used_fraction",
                                 value=0.25, labels={"device": "GPU-a"}),
                 observation_row(time=at, model_id=a, sensor="gpu", metric="gpu.device.memory_used_fraction",
                                 value=0.5, labels={"device": "MIG-b"}),
                 observation_row(time=at, model_id=a, sensor="gpu", metric="gpu.utilization", value=0.6)]
    queries.add_observations(session, rows)
    for hour, (predicted, realised, status) in enumerate([(50.0, 40.0, "scored"), (30.0, -5.0, "scored"),
                                                           (10.0, 12.0, "scored"), (20.0, None, "pending")]):
        session.add(DeferralShadow(key="carbon 1h +0s..12h", issued_at=h(hour), objective={"carbon": 1.0},
                                   earliest=h(hour), latest_start=h(hour + 12), duration_s=3600.0,
                                   chosen_start=h(hour + 3), due_at=h(hour + 13), predicted_gain=predicted,
                                   status=status, realised_gain=realised))


def test_sums_per_action_kind_count_savings_only_on_runs_with_both_numbers(engine: Engine):
    with session_scope(engine) as session:
        add_carbon_history(session)
    with session_scope(engine) as session:
        rows = {r.action: r for r in ledger.emissions_by_action(session, *DAY)}
    assert set(rows) == {"retrain", "rollback"}
    retrain, rollback = rows["retrain"], rows["rollback"]
    assert (retrain.runs, retrain.metered, retrain.compared) == (3, 2, 2)
    assert retrain.energy_kwh == pytest.approx(3.0) and retrain.emissions_kg == pytest.approx(0.65)
    assert (retrain.run_now_kg, retrain.chosen_kg, retrain.realised_kg) == pytest.approx((0.8, 0.51, 0.65))
    assert retrain.saved_kg == pytest.approx(0.15) and retrain.saved_fraction == pytest.approx(0.1875)
    assert (rollback.runs, rollback.metered, rollback.compared, rollback.saved_fraction) == (1, 1, 0, None)
    everything = ledger.total(list(rows.values()))
    assert (everything.runs, everything.metered, everything.compared) == (4, 3, 2)
    assert everything.emissions_kg == pytest.approx(0.75) and everything.saved_kg == pytest.approx(0.15)


def test_emissions_per_bucket_and_action_kind(engine: Engine):
    with session_scope(engine) as session:
        add_carbon_history(session)
        buckets = ledger.emissions_over_time(session, *DAY, points=4)  # 6 h buckets
    assert [(b.start.hour, b.action, b.runs, round(b.emissions_kg, 6)) for b in buckets] == [
        (6, "retrain", 1, 0.4), (6, "rollback", 1, 0.1), (12, "retrain", 1, 0.25)]


def test_deferral_windows_are_the_chosen_start_for_the_declared_duration(engine: Engine):
    with session_scope(engine) as session:
        add_carbon_history(session)
        windows = ledger.deferral_windows(session, T0, T0 + timedelta(days=2))
        newest = ledger.deferral_windows(session, T0, T0 + timedelta(days=2), limit=1)
    assert [(w.action, w.run_now_start.hour, w.chosen_start.hour, w.chosen_end.hour, w.state) for w in windows] == [
        ("retrain", 10, 13, 14, "succeeded"), ("retrain", 1, 4, 6, "succeeded")]  # newest first; at-once left out
    assert [w.chosen_start.hour for w in newest] == [13]


def test_intensity_is_averaged_per_bucket(engine: Engine):
    with session_scope(engine) as session:
        add_carbon_history(session)
        series = ledger.intensity_series(session, *DAY, points=24)
    assert len(series) == 24
    assert [(p.time.hour, p.mean, p.samples) for p in series[:3]] == [(0, 100.0, 2), (1, 110.0, 2), (2, 120.0, 2)]


def test_gpu_series_and_devices_per_device_label(engine: Engine):
    with session_scope(engine) as session:
        add_carbon_history(session)
        usage = ledger.gpu_usage(session, *DAY, points=24)
        first_only = ledger.gpu_usage(session, *DAY, points=24, max_devices=1)
    assert {(p.device, p.field) for p in usage.series} == {("GPU-a", "utilization"), ("GPU-a", "memory_used_fraction"),
                                                           ("MIG-b", "memory_used_fraction")}
    first = next(p for p in usage.series if p.device == "GPU-a" and p.field == "utilization")
    assert (first.time, first.mean, first.high, first.readings) == (T0, pytest.approx(0.6), pytest.approx(0.7), 2)
    devices = usage.devices
    assert [(d.device, d.readings) for d in devices] == [("GPU-a", 96), ("MIG-b", 48)]
    assert (devices[0].mean_utilization, devices[0].peak_utilization, devices[0].peak_memory_fraction) == \
        pytest.approx((0.6, 0.7, 0.25))
    assert devices[1].mean_utilization is None and devices[1].peak_memory_fraction == pytest.approx(0.5)
    assert devices[0].last_seen == T0 + timedelta(hours=23, minutes=30)
    assert [d.device for d in first_only.devices] == ["GPU-a"]


def test_the_grid_series_is_read_from_the_model_covering_the_range_longest(engine: Engine):
    with session_scope(engine) as session:
        add_carbon_history(session)
        late = registry.upsert_model(session, name="late")
        queries.add_observations(session, [observation_row(time=T0 + timedelta(hours=23), model_id=late.id,
                                                           sensor="carbon", metric="carbon.intensity", value=999.0)])
        series = ledger.intensity_series(session, *DAY, points=24)
    assert series[-1].mean == 330.0 and series[-1].samples == 2  # one model's two readings in the hour, not "late"'s


def test_shadow_scores_and_latest_activity(engine: Engine):
    with session_scope(engine) as session:
        add_carbon_history(session)
        counts, scores = ledger.shadow_scores(session, *DAY)
        latest = ledger.latest_activity(session)
    assert counts == {"scored": 3, "pending": 1}
    assert [(s.issued_at.hour, s.predicted_gain, s.realised_gain) for s in scores] == [
        (2, 10.0, 12.0), (1, 30.0, -5.0), (0, 50.0, 40.0)]
    assert latest == T0 + timedelta(hours=30)  # the last finished run


def test_an_empty_knowledge_base_reads_as_nothing(engine: Engine):
    with session_scope(engine) as session:
        assert ledger.latest_activity(session) is None
        assert ledger.emissions_by_action(session, *DAY) == []
        assert ledger.emissions_over_time(session, *DAY) == []
        assert ledger.deferral_windows(session, *DAY) == []
        assert ledger.intensity_series(session, *DAY) == []
        assert ledger.gpu_usage(session, *DAY) == ledger.GPUUsage([], [])
        assert ledger.shadow_scores(session, *DAY) == ({}, [])


def test_a_backward_range_or_a_bad_limit_names_the_parameter(sqlite_engine: Engine):
    with session_scope(sqlite_engine) as session:
        with pytest.raises(InvalidParameterError, match="The 'until' parameter of intensity_series must be a time "
                                                        "after since"):
            ledger.intensity_series(session, DAY[1], DAY[0])
        with pytest.raises(InvalidParameterError, match="The 'limit' parameter of deferral_windows must be a "
                                                        "positive int. Got 0 instead."):
            ledger.deferral_windows(session, *DAY, limit=0)
        with pytest.raises(InvalidParameterError, match="The 'points' parameter of gpu_usage"):
            ledger.gpu_usage(session, *DAY, points=0)
