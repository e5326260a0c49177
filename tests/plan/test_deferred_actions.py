"""``spec.defer``: the action waits between ``earliest`` and ``deadline``, and is cancelled if its policy clears."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent
from mape.execute.executor import Executor
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy, observe, recording_executor

HOUR = timedelta(hours=1)
WHEN = "drift.share_drifted > 0.3"  # no has(): a missing signal is an error (unknown), not false


@pytest.fixture
def executor(engine, tmp_path: Path) -> Executor:
    return recording_executor(engine, tmp_path)


def _deferring(**defer: object):  # type: ignore[no-untyped-def]
    return make_policy("defer-retrain", action="retrain", when=WHEN, cooldown=0,
                       defer={"earliest": "2h", "deadline": "8h", **defer})


def _tick(engine, planner, executor, model_name: str, at, share: float | None):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        model = next(m for m in [add_model(session, model_name)])
        if share is not None:
            observe(session, model, at, drift__share_drifted=share)
        report = planner.plan(session, [model], at)
        executor.dispatch(session, at)
        ready = executor.runnable(session, at)
    for run_id in ready:
        executor.run(run_id, at)
    return report


def test_a_deferred_decision_waits_for_its_earliest_time_and_then_runs(engine, executor, clock):
    planner = Planner([_deferring()], max_age=timedelta(minutes=30))
    t0 = clock()
    first = _tick(engine, planner, executor, "m", t0, 0.5)
    (decision,) = first.decisions["m"]
    assert decision.status == "proposed"
    assert decision.not_before == t0 + 2 * HOUR and decision.deadline == t0 + 8 * HOUR
    with session_scope(engine) as session:
        (run,) = session.exec(select(ActionRun)).all()
        assert run.state == "scheduled" and run.scheduled_for == t0 + 2 * HOUR
    # an hour later the condition still holds: the run waits, and the policy is held back as busy
    later = _tick(engine, planner, executor, "m", t0 + HOUR, 0.5)
    assert [d.status for d in later.decisions["m"]] == ["suppressed"]
    assert later.decisions["m"][0].reason.startswith("busy:")
    _tick(engine, planner, executor, "m", t0 + 2 * HOUR, 0.5)
    with session_scope(engine) as session:
        (run,) = session.exec(select(ActionRun)).all()
        assert run.state == "succeeded" and run.result == {"ran_at": (t0 + 2 * HOUR).isoformat()}


def test_a_deferred_run_is_cancelled_when_its_condition_clears_before_it_starts(engine, executor, clock):
    planner = Planner([_deferring()], max_age=timedelta(minutes=30))
    t0 = clock()
    _tick(engine, planner, executor, "m", t0, 0.5)
    cleared = _tick(engine, planner, executor, "m", t0 + HOUR, 0.05)
    assert [run.state for run in cleared.cancelled] == ["cancelled"]
    assert cleared.as_dict()["cancelled"] == [cleared.cancelled[0].id]
    with session_scope(engine) as session:
        (run,) = session.exec(select(ActionRun)).all()
        events = [e.kind for e in session.exec(select(AuditEvent).where(AuditEvent.kind == "action.cancelled"))]
    assert run.state == "cancelled" and run.started_at is None
    assert run.message.startswith("cancelled before it started: policy defer-retrain no longer fires for model m")
    assert events == ["action.cancelled"]
    # nothing runs at the scheduled time
    _tick(engine, planner, executor, "m", t0 + 2 * HOUR, 0.05)
    with session_scope(engine) as session:
        assert [r.state for r in session.exec(select(ActionRun))] == ["cancelled"]


def test_a_missing_signal_does_not_cancel_a_deferred_run(engine, executor, clock):
    planner = Planner([_deferring()], max_age=timedelta(minutes=30))
    t0 = clock()
    _tick(engine, planner, executor, "m", t0, 0.5)
    unknown = _tick(engine, planner, executor, "m", t0 + HOUR, None)  # no observation: cannot tell
    assert unknown.cancelled == []
    _tick(engine, planner, executor, "m", t0 + 2 * HOUR, None)
    with session_scope(engine) as session:
        assert [r.state for r in session.exec(select(ActionRun))] == ["succeeded"]


def test_cancellation_can_be_turned_off(engine, executor, clock):
    planner = Planner([_deferring(cancel_when_cleared=False)], max_age=timedelta(minutes=30))
    t0 = clock()
    _tick(engine, planner, executor, "m", t0, 0.5)
    cleared = _tick(engine, planner, executor, "m", t0 + HOUR, 0.05)
    assert cleared.cancelled == []


def test_a_deadline_before_earliest_is_refused_naming_the_field():
    with pytest.raises(Exception) as info:
        make_policy("bad", defer={"earliest": "8h", "deadline": "2h"})
    assert "spec.defer" in str(info.value) and "must not be before earliest" in str(info.value)
