"""Policy mode overrides: the mode a person set for a policy in the knowledge base, over its file's ``spec.mode``.

Who calls it: :mod:`mape.access.modes` sets and clears overrides (after the
admin check), for the dashboard's Policies page and ``mape policy mode``;
the planner reads :func:`overrides` once per pass and plans each overridden
policy in its overriding mode (:mod:`mape.plan.modes`). Overrides work like
pauses (:func:`knowledge.queries.pause`): one row per policy while in force,
taking effect at the next tick, held across restarts; every change appends a
``policy.mode_changed`` audit event that keeps the mode before, so the trail
is the override's history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from knowledge import audit
from knowledge.tables import PolicyMode, PolicyModeOverride
from mape._util.timeutil import ensure_utc, utcnow
from mape.errors import InvalidParameterError

#: The audit event of every change (set, changed or cleared).
MODE_CHANGED = "policy.mode_changed"


def check_mode(mode: str, owner: str) -> str:
    """``mode`` as stored, or :class:`InvalidParameterError` naming the value.

    >>> check_mode("dry-run", "set_mode")
    'dry-run'
    >>> check_mode("paused", "set_mode")
    Traceback (most recent call last):
    ...
    mape.errors.InvalidParameterError: The 'mode' parameter of set_mode must be one of enforce, dry-run, off. Got 'paused' instead.
    """
    value = mode.value if isinstance(mode, PolicyMode) else mode
    if value not in {m.value for m in PolicyMode}:
        raise InvalidParameterError.for_parameter("mode", owner, "one of " + ", ".join(m.value for m in PolicyMode),
                                                  mode)
    return value


def override(session: Session, policy_name: str) -> PolicyModeOverride | None:
    """The override in force for one policy, if any."""
    return session.exec(select(PolicyModeOverride).where(PolicyModeOverride.policy_name == policy_name)).first()


def overrides(session: Session) -> dict[str, PolicyModeOverride]:
    """Every override in force, by policy name (a row per overridden policy: a small table)."""
    return {row.policy_name: row for row in session.exec(select(PolicyModeOverride)
                                                         .order_by(col(PolicyModeOverride.policy_name)))}


def set_mode(session: Session, policy_name: str, mode: str, *, actor: str, reason: str, at: datetime | None = None,
             audit_payload: dict[str, Any] | None = None) -> PolicyModeOverride:
    """Override the mode of ``policy_name`` (replacing an override in force); audited as ``policy.mode_changed``.

    Setting the mode already in force changes nothing and records nothing.
    """
    value = check_mode(mode, "set_mode")
    at = ensure_utc(at or utcnow())
    row = override(session, policy_name)
    previous = None if row is None else row.mode
    if row is not None and row.mode == value:
        return row
    if row is None:
        row = PolicyModeOverride(policy_name=policy_name, mode=value, set_by=actor, reason=reason, set_at=at)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:  # someone else set one meanwhile: replace theirs
            return set_mode(session, policy_name, value, actor=actor, reason=reason, at=at,
                            audit_payload=audit_payload)
    else:
        row.mode, row.set_by, row.reason, row.set_at = value, actor, reason, at
        session.add(row)
        session.flush()
    audit.record(session, actor=actor, kind=MODE_CHANGED, subject=f"policy {policy_name}", time=at,
                 payload={"mode": value, "previous_override": previous, "reason": reason, **(audit_payload or {})})
    return row


def clear_mode(session: Session, policy_name: str, *, actor: str, reason: str, at: datetime | None = None,
               audit_payload: dict[str, Any] | None = None) -> PolicyModeOverride | None:
    """Lift the override of ``policy_name`` (its file's mode applies again); audited. None if there was none."""
    row = override(session, policy_name)
    if row is None:
        return None
    at = ensure_utc(at or utcnow())
    session.delete(row)
    session.flush()
    audit.record(session, actor=actor, kind=MODE_CHANGED, subject=f"policy {policy_name}", time=at,
                 payload={"mode": None, "previous_override": row.mode, "reason": reason, **(audit_payload or {})})
    return row
