"""Pausing and resuming models and policies: admins only, a reason required, the CLI's audit events (both databases)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import AuditEvent
from mape.access import AccessDenied, Identity, Role
from mape.access.pausing import pause_model, pause_policy, resume_model, resume_policy
from mape.errors import InvalidParameterError

ADA = Identity(name="ada", role=Role.admin, via="password")
ANN = Identity(name="ann", role=Role.approver, via="password")
VIC = Identity(name="vic", role=Role.viewer, via="password")


def _events(session) -> list[tuple[str, str, str, dict]]:  # type: ignore[no-untyped-def]
    return [(e.kind, e.actor, e.subject, e.payload)
            for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]


def test_an_admin_pauses_and_resumes_a_model_with_the_clis_audit_events(engine, clock):
    with session_scope(engine) as session:
        row, created = pause_model(session, "credit-risk", ADA, reason="  data incident  ", at=clock())
        assert created and (row.scope, row.name, row.paused_by, row.reason, row.paused_at) == (
            "model", "credit-risk", "ada", "data incident", clock())
        assert queries.active_pause(session, "model", "credit-risk") is not None
        again, created = pause_model(session, "credit-risk", ADA, reason="twice", at=clock())
        assert not created and again.reason == "data incident"
        lifted = resume_model(session, "credit-risk", ADA, at=clock() + timedelta(hours=1))
        assert lifted is not None and lifted.reason == "data incident"
        assert queries.active_pause(session, "model", "credit-risk") is None
        assert resume_model(session, "credit-risk", ADA, at=clock()) is None
        assert _events(session) == [
            ("model.paused", "ada", "model credit-risk", {"reason": "data incident"}),
            ("model.resumed", "ada", "model credit-risk",
             {"paused_by": "ada", "paused_at": clock().isoformat(), "reason": "data incident"}),
        ]


def test_an_admin_pauses_and_resumes_a_policy(engine, clock):
    with session_scope(engine) as session:
        _, created = pause_policy(session, "retrain-on-drift", ADA, reason="noisy", at=clock())
        assert created and queries.active_pause(session, "policy", "retrain-on-drift") is not None
        assert queries.active_pause(session, "model", "retrain-on-drift") is None
        assert resume_policy(session, "retrain-on-drift", ADA, at=clock()) is not None
        assert [kind for kind, *_ in _events(session)] == ["policy.paused", "policy.resumed"]


@pytest.mark.parametrize("who", [VIC, ANN])
def test_viewers_and_approvers_may_not_pause_or_resume_and_nothing_changes(engine, clock, who):
    with session_scope(engine) as session:
        with pytest.raises(AccessDenied, match=rf"{who.name} \({who.role.value}\) may not pause model credit-risk: "
                                               "that needs the admin role or higher"):
            pause_model(session, "credit-risk", who, reason="why", at=clock())
        with pytest.raises(AccessDenied, match="may not pause policy p"):
            pause_policy(session, "p", who, reason="why", at=clock())
        pause_model(session, "credit-risk", ADA, reason="incident", at=clock())
        with pytest.raises(AccessDenied, match="may not resume model credit-risk"):
            resume_model(session, "credit-risk", who, at=clock())
        with pytest.raises(AccessDenied, match="may not resume policy p"):
            resume_policy(session, "p", who, at=clock())
        assert [p.name for p in queries.pauses(session)] == ["credit-risk"]
        assert [kind for kind, *_ in _events(session)] == ["model.paused"]


def test_a_pause_without_a_reason_or_a_name_is_refused_naming_the_field(engine, clock):
    with session_scope(engine) as session:
        with pytest.raises(InvalidParameterError, match="The 'reason' parameter of pause_model must be a reason"):
            pause_model(session, "credit-risk", ADA, reason="   ", at=clock())
        with pytest.raises(InvalidParameterError, match="The 'name' parameter of pause_policy must be a non-empty "
                                                        "name. Got '' instead."):
            pause_policy(session, "", ADA, reason="why", at=clock())
        assert queries.pauses(session) == [] and _events(session) == []
