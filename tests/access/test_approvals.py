"""Approving and rejecting gated decisions: the role check, the compare-and-set, the audit trail (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from knowledge import queries
from knowledge.approvals import DecisionNotAwaitingError
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision
from mape.access import AccessDenied, Identity, Role, approve, reject
from mape.errors import InvalidParameterError
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy

ANN = Identity(name="ann", role=Role.approver, via="password")
VIC = Identity(name="vic", role=Role.viewer, via="password")
ADA = Identity(name="ada", role=Role.admin, via="oidc")


def _gated(session, clock, **spec):  # type: ignore[no-untyped-def]
    planner = Planner([make_policy("careful", approval="required", approval_timeout="2h", cooldown="12h", **spec)])
    model = add_model(session)
    (decision,) = planner.plan(session, [model], clock()).decisions["m"]
    assert decision.status == "awaiting_approval"
    return planner, model, decision


def _events(session, kind: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    return list(session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(AuditEvent.id)))


def test_an_approver_approves_and_the_decision_becomes_dispatchable(engine, clock):
    with session_scope(engine) as session:
        _, model, decision = _gated(session, clock)
        assert decision.id not in [d.id for d in queries.decisions_to_dispatch(session)]
        at = clock() + timedelta(minutes=10)
        approved = approve(session, decision.id, ANN, at=at, comment="  checked the drift report  ")
        assert (approved.status, approved.decided_by, approved.decided_at, approved.comment) == (
            "approved", "ann", at, "checked the drift report")
        assert [d.id for d in queries.decisions_to_dispatch(session)] == [decision.id]
        (event,) = _events(session, "decision.approved")
        assert (event.actor, event.time, event.subject) == ("ann", at, f"decision {decision.id} (careful -> retrain, "
                                                                       "approved)")
        assert event.payload == {"decision_id": decision.id, "model_id": model.id, "policy": "careful",
                                 "action": "retrain", "comment": "checked the drift report", "role": "approver",
                                 "signed_in_via": "password"}


def test_a_viewer_may_not_approve_or_reject_and_nothing_changes(engine, clock):
    with session_scope(engine) as session:
        _, _, decision = _gated(session, clock)
        with pytest.raises(AccessDenied, match=r"vic \(viewer\) may not approve decision \d+: that needs the "
                                               "approver role or higher"):
            approve(session, decision.id, VIC, at=clock())
        with pytest.raises(AccessDenied, match="may not reject"):
            reject(session, decision.id, VIC, at=clock(), comment="no")
        assert session.get(Decision, decision.id).status == "awaiting_approval"
        assert _events(session, "decision.approved") == [] and _events(session, "decision.rejected") == []


def test_a_rejection_needs_a_reason_and_closes_the_decision(engine, clock):
    with session_scope(engine) as session:
        _, _, decision = _gated(session, clock)
        with pytest.raises(InvalidParameterError, match="'comment' parameter of reject"):
            reject(session, decision.id, ADA, at=clock(), comment="   ")
        rejected = reject(session, decision.id, ADA, at=clock(), comment="retraining now would eat the GPU budget")
        assert (rejected.status, rejected.decided_by) == ("rejected", "ada")
        assert decision.id not in [d.id for d in queries.decisions_to_dispatch(session)]
        (event,) = _events(session, "decision.rejected")
        assert event.payload["role"] == "admin" and event.payload["signed_in_via"] == "oidc"


def test_a_decision_is_answered_once_and_the_second_answer_says_who_was_first(engine, clock):
    with session_scope(engine) as session:
        _, _, decision = _gated(session, clock)
        approve(session, decision.id, ANN, at=clock())
        with pytest.raises(DecisionNotAwaitingError, match=r"does not await approval: approved by ann at 2026-01-05"):
            reject(session, decision.id, ADA, at=clock(), comment="too late")
        assert len(_events(session, "decision.approved")) == 1 and _events(session, "decision.rejected") == []


def test_past_its_deadline_a_decision_can_no_longer_be_approved_and_the_tick_expires_it(engine, clock):
    with session_scope(engine) as session:
        planner, model, decision = _gated(session, clock)
        deadline = clock() + timedelta(hours=2)
        with pytest.raises(DecisionNotAwaitingError, match="expired at 2026-01-05T02:00:00"):
            approve(session, decision.id, ANN, at=deadline)
        report = planner.plan(session, [model], deadline)
        assert [d.id for d in report.expired] == [decision.id]
        with pytest.raises(DecisionNotAwaitingError, match="expired by controller"):
            approve(session, decision.id, ANN, at=deadline - timedelta(minutes=1))


def test_only_gated_decisions_can_be_answered(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        (decision,) = Planner([make_policy("eager")]).plan(session, [model], clock()).decisions["m"]
        assert decision.status == "proposed"
        with pytest.raises(DecisionNotAwaitingError, match=r"decision \d+ \(eager -> retrain, proposed\) does not "
                                                           "await approval"):
            approve(session, decision.id, ANN, at=clock())
        with pytest.raises(DecisionNotAwaitingError, match="there is no decision 999"):
            approve(session, 999, ANN, at=clock())
