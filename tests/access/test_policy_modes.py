"""Changing a policy's mode needs the admin role and a reason; the act is audited with who, their role and why."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlmodel import select

from knowledge import policy_modes
from knowledge.database import session_scope
from knowledge.tables import AuditEvent
from mape.access import AccessDenied, Identity, Role
from mape.access.modes import clear_policy_mode, set_policy_mode
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
ADA = Identity(name="ada", role=Role.admin, via="password")


def _changes(session) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [e.payload for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))
            if e.kind == "policy.mode_changed"]


@pytest.mark.parametrize("role", [Role.viewer, Role.approver])
def test_only_an_admin_may_set_or_clear_a_mode(sqlite_engine, role: Role):
    person = Identity(name="pat", role=role, via="password")
    with session_scope(sqlite_engine) as session:
        with pytest.raises(AccessDenied, match=f"pat \\({role.value}\\) may not change the mode of policy p"):
            set_policy_mode(session, "p", "off", person, reason="why not", at=T0)
        set_policy_mode(session, "p", "off", ADA, reason="incident", at=T0)
        with pytest.raises(AccessDenied):
            clear_policy_mode(session, "p", person, reason="over", at=T0)
        assert policy_modes.override(session, "p") is not None
        assert len(_changes(session)) == 1


def test_a_change_records_the_mode_before_the_person_and_the_reason(sqlite_engine):
    with session_scope(sqlite_engine) as session:
        set_policy_mode(session, "p", "off", ADA, reason=" incident 42 ", at=T0)
        same = set_policy_mode(session, "p", "off", ADA, reason="again", at=T0).reason
        set_policy_mode(session, "p", "dry-run", ADA, reason="watching", at=T0)
        lifted = clear_policy_mode(session, "p", ADA, reason="fixed", at=T0)
        again = clear_policy_mode(session, "p", ADA, reason="fixed", at=T0)
        changes = _changes(session)
    assert same == "incident 42", "setting the mode in force changes nothing"
    assert lifted is not None and lifted.mode == "dry-run" and again is None
    assert [(c["mode"], c["previous_override"], c["reason"], c["role"], c["signed_in_via"]) for c in changes] == [
        ("off", None, "incident 42", "admin", "password"), ("dry-run", "off", "watching", "admin", "password"),
        (None, "dry-run", "fixed", "admin", "password")]


def test_bad_input_names_the_parameter_and_value(sqlite_engine):
    with session_scope(sqlite_engine) as session:
        with pytest.raises(InvalidParameterError, match="'mode' parameter of set_policy_mode .* Got 'paused'"):
            set_policy_mode(session, "p", "paused", ADA, reason="x", at=T0)
        with pytest.raises(InvalidParameterError, match="'reason' parameter of set_policy_mode"):
            set_policy_mode(session, "p", "off", ADA, reason="  ", at=T0)
        with pytest.raises(InvalidParameterError, match="'name' parameter of clear_policy_mode"):
            clear_policy_mode(session, "", ADA, reason="x", at=T0)
        assert _changes(session) == []
