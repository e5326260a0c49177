"""The events of one tick that people hear about: new decisions, lapsed approvals, failed action runs.

Who calls it: the controller, once per tick after planning and running
actions (:func:`enqueue_tick`). Events are read back from the knowledge base
by the tick's logical time, not handed over in memory, so a tick re-run after
a crash finds them again; the outbox's dedup keys keep a repeated tick from
queueing anything twice.

* a decision made at this tick: ``awaiting_approval`` if it waits for a
  person, ``decision`` if it acts or is a dry run (suppressed ones are not news);
* a decision that expired at this tick: ``approval_expired``;
* an action run that failed or timed out at this tick: ``action_failed``;
* a verification verdict taken at this tick (:mod:`mape.plan.verification`):
  ``escalation`` when it left the matter to a person with no rollback to
  offer, else ``verification_failed`` for a ``fail`` (rolled back, or a
  rollback awaiting approval, which also brings its own ``awaiting_approval``)
  and for a canary step that did not hold (``fail`` or ``inconclusive``: the
  canary was withdrawn).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from knowledge.tables import ActionRun, ActionState, Decision, DecisionStatus, Verdict
from knowledge.tables import Notification as Row
from mape._util.timeutil import ensure_utc
from mape.config import NotificationEvent, NotificationSettings
from mape.notify.outbox import enqueue

_DECISION_EVENTS: dict[str, NotificationEvent] = {
    DecisionStatus.awaiting_approval.value: "awaiting_approval",
    DecisionStatus.proposed.value: "decision",
    DecisionStatus.dry_run.value: "decision",
}
_FAILED_RUNS = (ActionState.failed.value, ActionState.timed_out.value)


def enqueue_tick(session: Session, settings: NotificationSettings, at: datetime, *,
                 policy_channels: Mapping[str, Sequence[str]] | None = None,
                 models: Collection[int] | None = None) -> list[Row]:
    """Queue the notifications of the tick at ``at``; returns the rows created now.

    ``policy_channels`` maps a policy's name to its ``spec.notify`` channels,
    which receive every event about that policy's decisions. With ``models``,
    only the events about those models (the ones this controller holds the
    leases of: controllers sharing a fleet tick at the same times).
    """
    if not settings.channels:
        return []
    at = ensure_utc(at)
    extra = policy_channels or {}
    created: list[Row] = []
    def of_models(query: Any, column: Any) -> Any:
        return query if models is None else query.where(col(column).in_(list(models)))

    for decision in session.exec(of_models(select(Decision).where(Decision.tick_at == at, col(Decision.status).in_(
            list(_DECISION_EVENTS))), Decision.model_id).order_by(col(Decision.id))):
        created += enqueue(session, settings, _DECISION_EVENTS[decision.status], at=at, decision=decision,
                           channels=extra.get(decision.policy_name, ()))
    for decision in session.exec(of_models(select(Decision).where(
            Decision.status == DecisionStatus.expired.value, Decision.decided_at == at),
            Decision.model_id).order_by(col(Decision.id))):
        created += enqueue(session, settings, "approval_expired", at=at, decision=decision,
                           channels=extra.get(decision.policy_name, ()),
                           detail=f"nobody approved or rejected it by {at.isoformat()}")
    for run in session.exec(of_models(select(ActionRun).where(ActionRun.updated_at == at, col(ActionRun.state).in_(
            list(_FAILED_RUNS))), ActionRun.model_id).order_by(col(ActionRun.id))):
        decision = session.get(Decision, run.decision_id)
        created += enqueue(session, settings, "action_failed", at=at, decision=decision, run=run,
                           channels=extra.get(decision.policy_name, ()) if decision is not None else (),
                           detail=f"{run.state} after {run.attempts} attempt(s): {run.message}")
    for run in session.exec(of_models(select(ActionRun).where(ActionRun.verdict_at == at, col(ActionRun.verdict).in_(
            [Verdict.failed.value, Verdict.inconclusive.value])), ActionRun.model_id).order_by(col(ActionRun.id))):
        outcome = dict((run.verification or {}).get("outcome") or {})
        if outcome.get("outcome") == "escalated":
            event = "escalation"
        elif run.verdict == Verdict.failed.value or outcome.get("outcome") == "canary_aborted":
            event = "verification_failed"  # a canary step that did not hold: nobody is asked, so everybody is told
        else:
            continue  # inconclusive with a rollback awaiting approval: that decision's notification says it
        decision = session.get(Decision, run.decision_id)
        created += enqueue(session, settings, event, at=at, decision=decision, run=run,  # type: ignore[arg-type]
                           channels=extra.get(decision.policy_name, ()) if decision is not None else (),
                           detail=str(outcome.get("reason") or f"verification {run.verdict}"),
                           key=f"verdict-run-{run.id}")
    return created
