"""Changing a policy's mode without editing its file, with the admin check first.

Who calls it: the dashboard's Policies page and ``mape policy mode``. An
admin sets a policy to ``enforce``, ``dry-run`` or ``off`` over the
``spec.mode`` of its file, or clears the override so the file's mode applies
again; the planner plans in the override from the next tick on. Both acts
need the admin role and a reason (a person reading the trail will ask why a
policy stopped acting). The change and its ``policy.mode_changed`` audit
event, which records the person's role and how they signed in, are
:mod:`knowledge.policy_modes`'s.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from knowledge import policy_modes
from knowledge.tables import PolicyModeOverride
from mape.access.roles import Identity, Role, require
from mape.errors import InvalidParameterError


def set_policy_mode(session: Session, name: str, mode: str, identity: Identity, *, reason: str,
                    at: datetime) -> PolicyModeOverride:
    """Set policy ``name`` to ``mode`` as ``identity`` (an admin), whatever its file says; returns the override."""
    require(identity, Role.admin, f"change the mode of policy {name}")
    _check(name, reason, "set_policy_mode")
    return policy_modes.set_mode(session, name, policy_modes.check_mode(mode, "set_policy_mode"),
                                 actor=identity.name, reason=reason.strip(), at=at, audit_payload=identity.audit())


def clear_policy_mode(session: Session, name: str, identity: Identity, *, reason: str,
                      at: datetime) -> PolicyModeOverride | None:
    """Lift the override of policy ``name`` as ``identity`` (an admin); returns the lifted one, or None."""
    require(identity, Role.admin, f"change the mode of policy {name}")
    _check(name, reason, "clear_policy_mode")
    return policy_modes.clear_mode(session, name, actor=identity.name, reason=reason.strip(), at=at,
                                   audit_payload=identity.audit())


def _check(name: str, reason: str, owner: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError.for_parameter("name", owner, "a policy name", name)
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidParameterError.for_parameter(
            "reason", owner, "a reason (it is kept in the audit trail with the change)", reason)
