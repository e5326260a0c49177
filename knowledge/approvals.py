"""A person's answer to a decision awaiting approval: approved (the next tick dispatches it) or rejected (closed).

Who calls it: :mod:`mape.access.approvals`, which checks the person's role
first (the dashboard's Approvals page and ``mape decisions approve|reject``).
The answer is a compare-and-set on the decision's status, like
:func:`knowledge.queries.expire_decisions`: of a person approving, another
rejecting and the controller expiring the same decision at the same moment,
exactly one wins and the others are told what happened instead. Each answer
appends a ``decision.approved`` or ``decision.rejected`` audit event with the
person, the role they acted in and their comment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from knowledge import audit
from knowledge.tables import Decision, DecisionStatus
from mape._util.timeutil import ensure_utc
from mape.errors import MapeError

ANSWERS = (DecisionStatus.approved.value, DecisionStatus.rejected.value)


class DecisionNotAwaitingError(MapeError, LookupError):
    """The decision does not exist, or no longer awaits approval (answered, expired, or never gated)."""


def answer(session: Session, decision_id: int, *, status: str, actor: str, comment: str, at: datetime,
           audit_payload: dict[str, Any] | None = None) -> Decision:
    """Approve or reject an ``awaiting_approval`` decision (flushed, not committed); returns it, changed.

    Parameters
    ----------
    status : {"approved", "rejected"}
        The answer.
    actor : str
        Who answers: stored as the decision's ``decided_by`` and the audit event's actor.
    comment : str
        Why; stored on the decision and in the audit event.
    at : datetime
        When: the decision's ``decided_at``. A decision whose approval deadline
        (``expires_at``) is at or before ``at`` can no longer be answered.
    audit_payload : dict, optional
        More for the audit event (the role the person acted in, how they signed in).

    Raises
    ------
    DecisionNotAwaitingError
        No such decision, or it does not await approval (the message says its status and who decided it, when).
    """
    if status not in ANSWERS:
        raise ValueError(f"an answer is one of {', '.join(ANSWERS)}, not {status!r}")
    at = ensure_utc(at)
    decision = session.get(Decision, decision_id)
    if decision is None:
        raise DecisionNotAwaitingError(f"there is no decision {decision_id}")
    if decision.status == DecisionStatus.awaiting_approval.value and decision.expires_at is not None \
            and ensure_utc(decision.expires_at) <= at:
        raise DecisionNotAwaitingError(
            f"{decision} expired at {ensure_utc(decision.expires_at).isoformat()}: nobody answered it in time; "
            "the next tick records it as expired")
    result = session.execute(
        update(Decision)
        .where(col(Decision.id) == decision_id, col(Decision.status) == DecisionStatus.awaiting_approval.value)
        .values(status=status, decided_by=actor, decided_at=at, comment=comment)
        .execution_options(synchronize_session=False)
    )
    session.refresh(decision)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise DecisionNotAwaitingError(_not_awaiting(decision))
    audit.record(session, actor=actor, kind=f"decision.{status}", subject=str(decision), time=at,
                 payload={"decision_id": decision.id, "model_id": decision.model_id, "policy": decision.policy_name,
                          "action": decision.action, "comment": comment, **(audit_payload or {})})
    return decision


def _not_awaiting(decision: Decision) -> str:
    text = f"{decision} does not await approval"
    if decision.decided_by:
        when = f" at {ensure_utc(decision.decided_at).isoformat()}" if decision.decided_at else ""
        text += f": {decision.status} by {decision.decided_by}{when}"
    return text


def recent_rejections(session: Session, *, since: datetime, until: datetime) -> list[Decision]:
    """For each (model, policy), its newest decision a person rejected in ``(since, until]`` (by answer time).

    Who calls it: the planner's ledger (:func:`mape.plan.ledger.read_ledger`):
    a rejection holds the policy's cooldown for that model from the moment it
    was answered, so a person who said no is not asked again at the next tick.
    One query over the rejected decisions answered in the window (few: people
    answer them one by one).
    """
    rows = session.exec(
        select(Decision)
        .where(Decision.status == DecisionStatus.rejected.value, col(Decision.decided_at) > since,
               col(Decision.decided_at) <= until)
        .order_by(col(Decision.decided_at), col(Decision.id))
    ).all()
    newest: dict[tuple[int, str], Decision] = {}
    for row in rows:
        newest[(row.model_id, row.policy_name)] = row
    return list(newest.values())
