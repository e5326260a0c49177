"""A person's request can wait for a second person: it is not dispatched until an approver answers it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision
from mape.access import Identity, Role, approve
from tests.controller.world import make_world


def test_a_request_that_needs_approval_waits_and_runs_after_the_approval(tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    world = make_world(tmp_path / "world", policies)
    world.serve_hour(1)
    at = world.scenario.at(1)
    decision = world.controller.request_action("credit-risk", "retrain", params={"window": "6h"}, actor="alice",
                                               reason="the new quarter's data", at=at, needs_approval=True)
    assert decision.status == "awaiting_approval" and decision.expires_at is None and decision.decided_by is None

    world.controller.tick(at)
    with session_scope(world.controller.engine) as session:
        assert session.exec(select(ActionRun)).all() == []
        approve(session, decision.id, Identity(name="bob", role=Role.approver, via="password"), at=at + timedelta(minutes=5),
                comment="checked the data")
    world.serve_hour(2)
    report = world.controller.tick(world.scenario.at(2))
    assert [run.action for run in report.actions] == ["retrain"]
    with session_scope(world.controller.engine) as session:
        assert session.get(ActionRun, report.actions[0].id).decision_id == decision.id
        stored = session.get(Decision, decision.id)
        assert stored.decided_by == "bob" and stored.actor == "alice"
        requested = session.exec(select(AuditEvent).where(AuditEvent.kind == "decision.requested")).one()
        assert requested.payload["needs_approval"] is True


def test_a_request_with_a_deadline_expires_and_a_non_positive_one_is_refused(tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    world = make_world(tmp_path / "world", policies)
    at = world.scenario.at(1)
    decision = world.controller.request_action("credit-risk", "retrain", actor="alice", reason="r", at=at,
                                               needs_approval=True, approval_timeout=timedelta(hours=2))
    assert decision.expires_at is not None and decision.expires_at.replace(tzinfo=at.tzinfo) == at + timedelta(hours=2)
    with pytest.raises(ValueError, match="approval_timeout must be positive"):
        world.controller.request_action("credit-risk", "retrain", actor="alice", reason="r", at=at,
                                        needs_approval=True, approval_timeout=timedelta(0))
