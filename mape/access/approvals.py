"""Approving and rejecting decisions that wait for a person, with the role check first.

Who calls it: the dashboard's Approvals page and ``mape decisions approve|reject``.
An approved decision is dispatched by the next tick like any other; a
rejected one is closed. Both need the approver role; a rejection needs a
comment (the policy's author will want to know why). The change itself and
its audit event are :func:`knowledge.approvals.answer`'s.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from knowledge.approvals import answer
from knowledge.tables import Decision, DecisionStatus
from mape.access.roles import Identity, Role, require
from mape.errors import InvalidParameterError


def approve(session: Session, decision_id: int, identity: Identity, *, at: datetime, comment: str = "") -> Decision:
    """Approve decision ``decision_id`` as ``identity`` (an approver or admin); the next tick dispatches it."""
    require(identity, Role.approver, f"approve decision {decision_id}")
    return answer(session, decision_id, status=DecisionStatus.approved.value, actor=identity.name,
                  comment=comment.strip(), at=at, audit_payload=identity.audit())


def reject(session: Session, decision_id: int, identity: Identity, *, at: datetime, comment: str) -> Decision:
    """Reject decision ``decision_id`` as ``identity`` (an approver or admin), saying why; it is closed."""
    require(identity, Role.approver, f"reject decision {decision_id}")
    if not comment.strip():
        raise InvalidParameterError.for_parameter("comment", "reject", "a reason (it is shown to the policy's owner)",
                                                  comment)
    return answer(session, decision_id, status=DecisionStatus.rejected.value, actor=identity.name,
                  comment=comment.strip(), at=at, audit_payload=identity.audit())
