"""What a notification says: a typed :class:`Notification` built from a decision or an action run.

Who calls it: :mod:`mape.notify.outbox` builds one per event when it queues
it, and stores its rendered title and body, so the message a person gets is
exactly the one recorded. The body names the model, the decision, the policy,
its condition and the values of the context that condition read (the
evidence), any error, and a link to the decision in the dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from knowledge.tables import ActionRun, Decision
from mape.config import NotificationEvent

#: Most evidence values a message lists; the dashboard link has the rest.
MAX_EVIDENCE = 12
_STRING_LITERAL = re.compile(r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*\"""")
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)")
_HEADLINES: dict[str, str] = {
    "decision": "{action} decided by policy {policy} ({status})",
    "awaiting_approval": "{action} awaits approval (policy {policy})",
    "approval_expired": "{action} expired without approval (policy {policy})",
    "escalation": "escalation: {action} (policy {policy})",
    "action_failed": "{action} failed",
    "verification_failed": "verification of {action} failed",
    "notify": "policy {policy}",
}
_NOTIFY_TYPES = {"action_failed": "failure", "verification_failed": "failure", "escalation": "warning",
                 "awaiting_approval": "warning", "approval_expired": "warning"}


def dashboard_link(base: str | None, decision_id: int | None) -> str | None:
    """The dashboard page of a decision, or None without a configured dashboard or decision.

    >>> dashboard_link("http://ops.example:8501/", 42)
    'http://ops.example:8501/?decision=42'
    >>> dashboard_link(None, 42) is None
    True
    """
    if not base or decision_id is None:
        return None
    return f"{base.rstrip('/')}/?decision={decision_id}"


def _lookup(context: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = context
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def evidence_summary(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The values a decision's conditions read from its stored context, plus plain top-level facts.

    >>> evidence_summary({"when": "drift.share_drifted > 0.3 && 'x' in symptoms", "mode": "enforce",
    ...                   "context": {"drift": {"share_drifted": 0.42}, "symptoms": {}}})
    {'drift.share_drifted': 0.42}
    >>> evidence_summary({"requested_by": "alice", "reason": "hotfix"})
    {'requested_by': 'alice', 'reason': 'hotfix'}
    """
    summary: dict[str, Any] = {}
    context = evidence.get("context")
    if isinstance(context, Mapping):
        for expression in (evidence.get("when"), evidence.get("unless")):
            if not isinstance(expression, str):
                continue
            for path in _PATH.findall(_STRING_LITERAL.sub("''", expression)):
                found, value = _lookup(context, path)
                if found and _scalar(value):
                    summary.setdefault(path, value)
    for key, value in evidence.items():
        if key not in ("when", "unless", "mode", "source", "context", "firing") and _scalar(value):
            summary.setdefault(key, value)
    return dict(list(summary.items())[:MAX_EVIDENCE])


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


class Notification(BaseModel):
    """One message about one event, before it is queued for its channels.

    Parameters
    ----------
    event : str
        What happened (see :data:`mape.config.NotificationEvent`).
    title : str
        One line: ``[mape] <model>: <what happened>``.
    at : datetime
        The logical time of the tick that raised it.
    model, policy, action, status, reason : str, optional
        From the decision (and the model's row).
    decision_id, action_run_id : int, optional
        What it is about.
    condition : str, optional
        The policy's ``when`` as stored with the decision.
    evidence : dict
        :func:`evidence_summary` of the decision's evidence.
    detail : str
        The error, or the ``notify`` action's message.
    link : str, optional
        The decision's page in the dashboard.
    """

    model_config = ConfigDict(frozen=True)

    event: NotificationEvent
    title: str
    at: datetime
    model: str | None = None
    decision_id: int | None = None
    action_run_id: int | None = None
    policy: str | None = None
    action: str | None = None
    status: str | None = None
    reason: str = ""
    condition: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""
    link: str | None = None

    @property
    def notify_type(self) -> str:
        """Apprise's message type: ``failure``, ``warning`` or ``info`` (services colour it)."""
        return _NOTIFY_TYPES.get(self.event, "info")

    def body(self) -> str:
        """The plain-text message: facts first, one per line, the dashboard link last."""
        lines: list[str] = []
        if self.event == "notify" and self.detail:
            lines.append(self.detail)
        if self.model:
            lines.append(f"Model: {self.model}")
        if self.decision_id is not None:
            lines.append(f"Decision {self.decision_id} of policy {self.policy}: {self.action} ({self.status})")
        if self.action_run_id is not None:
            lines.append(f"Action run: {self.action_run_id}")
        if self.reason:
            lines.append(f"Reason: {self.reason}")
        if self.condition:
            lines.append(f"Condition: {self.condition}")
        if self.evidence:
            lines.append("Evidence: " + "; ".join(f"{k} = {_format(v)}" for k, v in self.evidence.items()))
        if self.detail and self.event != "notify":
            lines.append(f"Error: {self.detail}" if self.event.endswith("failed") else f"Detail: {self.detail}")
        if self.link:
            lines.append(f"Dashboard: {self.link}")
        lines.append(f"Time: {self.at.isoformat()}")
        return "\n".join(lines)


def build(event: NotificationEvent, *, at: datetime, model: str | None = None, decision: Decision | None = None,
          run: ActionRun | None = None, detail: str = "", title: str | None = None,
          dashboard_url: str | None = None) -> Notification:
    """The notification of ``event`` about a decision (and its action run, if any).

    >>> from datetime import timezone
    >>> d = Decision(id=7, model_id=1, policy_name="careful", action="retrain", status="awaiting_approval",
    ...              dedup_key="k", evidence={"when": "drift.share_drifted > 0.3",
    ...                                       "context": {"drift": {"share_drifted": 0.5}}})
    >>> n = build("awaiting_approval", at=datetime(2026, 1, 5, tzinfo=timezone.utc), model="credit", decision=d,
    ...           dashboard_url="http://ops:8501")
    >>> n.title
    '[mape] credit: retrain awaits approval (policy careful)'
    >>> print(n.body())
    Model: credit
    Decision 7 of policy careful: retrain (awaiting_approval)
    Condition: drift.share_drifted > 0.3
    Evidence: drift.share_drifted = 0.5
    Dashboard: http://ops:8501/?decision=7
    Time: 2026-01-05T00:00:00+00:00
    """
    evidence = dict(decision.evidence or {}) if decision is not None else {}
    action = decision.action if decision is not None else (run.action if run is not None else None)
    policy = decision.policy_name if decision is not None else None
    status = decision.status if decision is not None else None
    headline = _HEADLINES[event].format(action=action or "action", policy=policy or "-", status=status or "-")
    return Notification(
        event=event, at=at, model=model,
        title=title or f"[mape] {model or 'mape'}: {headline}",
        decision_id=decision.id if decision is not None else None,
        action_run_id=run.id if run is not None else None,
        policy=policy, action=action, status=status,
        reason=decision.reason if decision is not None else "",
        condition=evidence.get("when") if isinstance(evidence.get("when"), str) else None,
        evidence=evidence_summary(evidence), detail=detail,
        link=dashboard_link(dashboard_url, decision.id if decision is not None else None),
    )
