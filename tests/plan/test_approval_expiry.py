"""``spec.approval_timeout``: a decision nobody approves in time expires, is audited, and stops counting."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision, DecisionStatus
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy

HOUR = timedelta(hours=1)


def _expired_events(session) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    return list(session.exec(select(AuditEvent).where(AuditEvent.kind == "decision.expired").order_by(AuditEvent.id)))


def test_an_awaiting_decision_expires_at_its_deadline_and_not_before(engine, clock):
    careful = make_policy("careful", when="model.name == 'm'", approval="required", approval_timeout="2h",
                          cooldown="12h")
    planner = Planner([careful])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        (decision,) = planner.plan(session, [model], t0).decisions["m"]
        assert decision.status == "awaiting_approval" and decision.expires_at == t0 + 2 * HOUR
        before = planner.plan(session, [model], t0 + timedelta(hours=1, minutes=59))
        assert before.expired == [] and session.get(Decision, decision.id).status == "awaiting_approval"
        assert _expired_events(session) == []

        at_deadline = planner.plan(session, [model], t0 + 2 * HOUR)
        assert [d.id for d in at_deadline.expired] == [decision.id]
        assert at_deadline.as_dict()["expired"] == [decision.id]
        stored = session.get(Decision, decision.id)
        assert (stored.status, stored.decided_by, stored.decided_at) == ("expired", "controller", t0 + 2 * HOUR)
        (event,) = _expired_events(session)
        assert (event.actor, event.time, event.subject) == ("controller", t0 + 2 * HOUR,
                                                            f"decision {decision.id} (careful -> retrain, expired)")
        assert event.payload == {"decision_id": decision.id, "model_id": model.id, "policy": "careful",
                                 "action": "retrain", "created_at": t0.isoformat(),
                                 "expires_at": (t0 + 2 * HOUR).isoformat()}

        again = planner.plan(session, [model], t0 + 2 * HOUR)  # the same tick replayed: nothing more to expire
        assert again.expired == [] and len(_expired_events(session)) == 1


def test_an_expired_decision_no_longer_counts_for_cooldown(engine, clock):
    planner = Planner([make_policy("careful", approval="required", approval_timeout="1h", cooldown="6h")])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        first = planner.plan(session, [model], t0).decisions["m"][0]
        assert first.status == "awaiting_approval"
        inside = planner.plan(session, [model], t0 + timedelta(minutes=30)).decisions["m"][0]
        assert inside.status == "suppressed"
        assert inside.reason == f"cooldown: last retrain decision {first.id} at {t0.isoformat()}, cooldown 6h"
        report = planner.plan(session, [model], t0 + HOUR)
    # the first expired in this pass, before the policies were evaluated: a fresh request for approval
    assert [d.id for d in report.expired] == [first.id] and first.status == "expired"
    (after,) = report.decisions["m"]
    assert after.status == "awaiting_approval" and after.expires_at == t0 + 2 * HOUR


def test_a_decided_decision_never_expires(engine, clock):
    planner = Planner([make_policy("careful", approval="required", approval_timeout="1h", cooldown="1d")])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        decision = planner.plan(session, [model], t0).decisions["m"][0]
        decision.status = DecisionStatus.approved.value
        decision.decided_by, decision.decided_at = "alice", t0 + timedelta(minutes=10)
        session.add(decision)
        session.flush()
        report = planner.plan(session, [model], t0 + 3 * HOUR)
        assert report.expired == [] and session.get(Decision, decision.id).status == "approved"
        assert _expired_events(session) == []


def test_the_default_timeout_is_a_day_and_zero_means_never(engine, clock):
    planner = Planner([make_policy("default", action="retrain", approval="required", cooldown=0,
                                   selector={"models": ["m"]}),
                       make_policy("patient", action="rollback", approval="required", approval_timeout=0, cooldown=0,
                                   selector={"models": ["n"]})])
    t0 = clock()
    with session_scope(engine) as session:
        models = [add_model(session, "m"), add_model(session, "n")]
        first = planner.plan(session, models, t0)
        (default,) = first.decisions["m"]
        (patient,) = first.decisions["n"]
        assert default.expires_at == t0 + timedelta(days=1) and patient.expires_at is None
        later = planner.plan(session, models, t0 + timedelta(days=30))
        assert [d.id for d in later.expired] == [default.id]
        assert session.get(Decision, patient.id).status == "awaiting_approval"


def test_only_awaiting_decisions_get_a_deadline(engine, clock):
    planner = Planner([make_policy("eager", action="rollback", priority=90),
                       make_policy("careful", action="retrain", approval="required")])
    with session_scope(engine) as session:
        model = add_model(session)
        decisions = planner.plan(session, [model], clock()).decisions["m"]
    assert [(d.status, d.expires_at) for d in decisions] == [("proposed", None), ("suppressed", None)]
