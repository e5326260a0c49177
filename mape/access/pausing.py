"""Pausing and resuming a model or a policy, with the admin check first.

Who calls it: the dashboard's Fleet page (a model) and Policies page (a
policy); ``mape pause`` and ``mape resume`` make the same acts. A paused
model's decisions, or a paused policy's, are recorded as suppressed from the
next tick on and never acted on. All four acts need the admin role; a pause
needs a reason (it is shown in every decision it suppresses). The change
and its audit event (``model.paused``, ``model.resumed``, ``policy.paused``,
``policy.resumed``, the events the CLI writes) are
:func:`knowledge.queries.pause`'s and :func:`knowledge.queries.resume`'s.

Pausing what is already paused changes nothing and returns the pause in
force (its author and reason); resuming what is not paused returns None.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from knowledge import queries
from knowledge.tables import Pause, PauseScope
from mape.access.roles import Identity, Role, require
from mape.errors import InvalidParameterError


def pause_model(session: Session, name: str, identity: Identity, *, reason: str,
                at: datetime) -> tuple[Pause, bool]:
    """Pause model ``name`` for every policy as ``identity`` (an admin); returns (pause, created)."""
    return _pause(session, PauseScope.model, name, identity, reason=reason, at=at, owner="pause_model")


def resume_model(session: Session, name: str, identity: Identity, *, at: datetime) -> Pause | None:
    """Lift the pause of model ``name`` as ``identity`` (an admin); returns the lifted pause, or None."""
    return _resume(session, PauseScope.model, name, identity, at=at, owner="resume_model")


def pause_policy(session: Session, name: str, identity: Identity, *, reason: str,
                 at: datetime) -> tuple[Pause, bool]:
    """Pause policy ``name`` for every model as ``identity`` (an admin); returns (pause, created)."""
    return _pause(session, PauseScope.policy, name, identity, reason=reason, at=at, owner="pause_policy")


def resume_policy(session: Session, name: str, identity: Identity, *, at: datetime) -> Pause | None:
    """Lift the pause of policy ``name`` as ``identity`` (an admin); returns the lifted pause, or None."""
    return _resume(session, PauseScope.policy, name, identity, at=at, owner="resume_policy")


def _pause(session: Session, scope: PauseScope, name: str, identity: Identity, *, reason: str, at: datetime,
           owner: str) -> tuple[Pause, bool]:
    require(identity, Role.admin, f"pause {scope.value} {name}")
    _check_name(name, owner)
    if not reason.strip():
        raise InvalidParameterError.for_parameter(
            "reason", owner, "a reason (it is shown in every decision the pause suppresses)", reason)
    return queries.pause(session, scope, name, actor=identity.name, reason=reason.strip(), at=at)


def _resume(session: Session, scope: PauseScope, name: str, identity: Identity, *, at: datetime,
            owner: str) -> Pause | None:
    require(identity, Role.admin, f"resume {scope.value} {name}")
    _check_name(name, owner)
    return queries.resume(session, scope, name, actor=identity.name, at=at)


def _check_name(name: str, owner: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterError.for_parameter("name", owner, "a non-empty name", name)
