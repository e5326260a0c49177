"""Pausing a policy or a model: its decisions are recorded as suppressed, naming who paused it and why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy, observe

HOUR = timedelta(hours=1)


def _kinds(session) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.id)) if e.kind != "policy.loaded"]


def test_a_paused_policy_is_suppressed_with_the_reason_and_resuming_restores_it(engine, clock):
    planner = Planner([make_policy("retrain-now", action="retrain", cooldown=0)])
    paused_at = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        pause, created = queries.pause(session, "policy", "retrain-now", actor="alice", reason="incident 42",
                                       at=paused_at)
        assert created
        (held,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
        lifted = queries.resume(session, "policy", "retrain-now", actor="bob", at=clock.advance(HOUR))
        (resumed,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
        kinds = _kinds(session)
        events = {e.kind: e for e in session.exec(select(AuditEvent))}
    assert held.status == "suppressed"
    assert held.reason == f"paused: policy retrain-now paused by alice at {paused_at.isoformat()}: incident 42"
    assert lifted is not None and lifted.paused_by == "alice"
    assert resumed.status == "proposed"
    assert kinds == ["model.registered", "policy.paused", "policy.resumed"]
    assert (events["policy.paused"].actor, events["policy.paused"].subject) == ("alice", "policy retrain-now")
    assert events["policy.paused"].payload == {"reason": "incident 42"}
    assert (events["policy.resumed"].actor, events["policy.resumed"].payload["paused_by"]) == ("bob", "alice")


def test_a_paused_model_suppresses_every_policy_for_it_and_only_for_it(engine, clock):
    planner = Planner([make_policy("rollback-fast", action="rollback", priority=90),
                       make_policy("retrain-slow", action="retrain", priority=10)])
    with session_scope(engine) as session:
        paused_model = add_model(session, "m")
        other = add_model(session, "n")
        queries.pause(session, "model", "m", actor="alice", reason="migrating", at=clock())
        report = planner.plan(session, [paused_model, other], clock.advance(HOUR))
    assert [(d.policy_name, d.status) for d in report.decisions["m"]] == [("rollback-fast", "suppressed"),
                                                                         ("retrain-slow", "suppressed")]
    assert all(d.reason == f"paused: model m paused by alice at {clock().replace(hour=0).isoformat()}: migrating"
               for d in report.decisions["m"])
    assert [(d.policy_name, d.status) for d in report.decisions["n"]] == [("rollback-fast", "proposed"),
                                                                         ("retrain-slow", "suppressed")]


def test_a_paused_policy_does_not_take_the_models_slot(engine, clock):
    planner = Planner([make_policy("high", action="rollback", priority=90),
                       make_policy("low", action="retrain", priority=10)])
    with session_scope(engine) as session:
        model = add_model(session)
        queries.pause(session, "policy", "high", actor="alice", reason="noisy", at=clock())
        report = planner.plan(session, [model], clock.advance(HOUR))
    assert [(d.policy_name, d.status) for d in report.decisions["m"]] == [("high", "suppressed"), ("low", "proposed")]


def test_pausing_a_policy_does_not_pause_one_with_the_same_name_as_a_model(engine, clock):
    planner = Planner([make_policy("m", action="retrain")])
    with session_scope(engine) as session:
        model = add_model(session, "m")
        queries.pause(session, "model", "other", actor="alice", reason="x", at=clock())
        queries.pause(session, "policy", "m-not", actor="alice", reason="x", at=clock())
        (decision,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
    assert decision.status == "proposed"


def test_a_paused_policy_that_does_not_fire_records_nothing(engine, clock):
    planner = Planner([make_policy("p", when="drift.share_drifted > 0.3")])
    with session_scope(engine) as session:
        model = add_model(session)
        queries.pause(session, "policy", "p", actor="alice", reason="x", at=clock())
        observe(session, model, clock.advance(HOUR), drift__share_drifted=0.1)
        report = planner.plan(session, [model], clock())
        assert session.exec(select(Decision)).all() == []
    assert report.decisions["m"] == []


def test_for_keeps_counting_while_paused_so_a_resumed_policy_fires_at_once(engine, clock):
    planner = Planner([make_policy("p", cooldown=0, **{"for": "2h"})])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        queries.pause(session, "policy", "p", actor="alice", reason="x", at=t0)
        statuses = [[d.status for d in planner.plan(session, [model], t0 + i * HOUR).decisions["m"]]
                    for i in range(3)]
        queries.resume(session, "policy", "p", actor="alice", at=t0 + 2 * HOUR)
        resumed = planner.plan(session, [model], t0 + 3 * HOUR).decisions["m"]
    assert statuses == [[], [], ["suppressed"]]
    assert [d.status for d in resumed] == ["proposed"]


def test_pausing_twice_keeps_the_first_pause_and_audits_once(engine, clock):
    with session_scope(engine) as session:
        first, created = queries.pause(session, "model", "m", actor="alice", reason="first", at=clock())
        second, again = queries.pause(session, "model", "m", actor="bob", reason="second", at=clock.advance(HOUR))
        assert (created, again) == (True, False)
        assert (second.id, second.paused_by, second.reason) == (first.id, "alice", "first")
        assert [str(p) for p in queries.pauses(session)] == [
            f"model m paused by alice at {first.paused_at.isoformat()}: first"]
        assert _kinds(session) == ["model.paused"]


def test_resuming_what_is_not_paused_returns_none_and_audits_nothing(engine):
    with session_scope(engine) as session:
        assert queries.resume(session, "policy", "p", actor="alice") is None
        assert _kinds(session) == []


def test_an_unknown_scope_is_refused(engine):
    with session_scope(engine) as session:
        with pytest.raises(ValueError, match="The 'scope' parameter of pause must be 'policy' or 'model'. "
                                             "Got 'fleet' instead."):
            queries.pause(session, "fleet", "x", actor="alice", reason="x")
        assert queries.pauses(session) == []
