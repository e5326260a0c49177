"""Queue notifications in the knowledge base, and deliver the due ones with bounded retries.

Who calls it: the controller once per tick (:func:`enqueue` for the tick's
events, then :func:`deliver`); the ``notify`` action and the verification code
call :func:`enqueue` inside their own transaction, so a message is queued if
and only if what it reports was committed.

Queueing writes one ``notification`` row per event and channel, with a dedup
key, so a repeated tick queues nothing twice. Delivery claims each due row
(compare-and-set on its attempt count), sends it through
:mod:`mape.notify.sender`, and records the outcome on the row and in the
audit trail (``notification.sent``, ``notification.retrying``,
``notification.failed``), naming the channel and the URLs as shown, never the
URLs themselves. A failed attempt waits ``retry_delay``, doubling up to
``max_retry_delay``, until ``max_attempts``; a tick stops starting sends once
``budget`` is spent. Nothing here raises into the tick for a channel's sake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from knowledge import audit
from knowledge import outbox as store
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision, ManagedModel, NotificationState
from knowledge.tables import Notification as Row
from mape._util.timeutil import ensure_utc
from mape.config import NotificationEvent, NotificationSettings
from mape.notify.message import build
from mape.notify.sender import SendResult, send

log = logging.getLogger(__name__)


class UnknownChannelError(KeyError):
    """A notification names a channel the configuration does not define."""


def recipients(settings: NotificationSettings, event: str, extra: Iterable[str] = ()) -> list[str]:
    """Channels subscribed to ``event``, then the ``extra`` ones (a policy's ``notify``) that exist, each once.

    >>> from mape.config import NotificationSettings
    >>> s = NotificationSettings.model_construct(channels={"ops": type("C", (), {"events": ["action_failed"]})(),
    ...                                                    "ml": type("C", (), {"events": []})()})
    >>> recipients(s, "action_failed", ["ml", "gone"])
    ['ops', 'ml']
    """
    names = [name for name, channel in settings.channels.items() if event in channel.events]
    names += [name for name in extra if name in settings.channels]
    return list(dict.fromkeys(names))


def enqueue(session: Session, settings: NotificationSettings, event: NotificationEvent, *, at: datetime,
            decision: Decision | None = None, run: ActionRun | None = None, model: str | None = None,
            detail: str = "", channels: Iterable[str] = (), only: bool = False, title: str | None = None,
            key: str | None = None) -> list[Row]:
    """Queue the notification of ``event`` for its channels; returns the rows created now.

    Parameters
    ----------
    session : Session
        The caller's transaction: the rows commit with it.
    settings : NotificationSettings
        Channels, their events and the dashboard URL.
    event : str
        What happened.
    at : datetime
        The logical time; the first attempt is due then.
    decision, run : optional
        What it is about; the message carries the decision's evidence and link.
    model : str, optional
        The model's name (read from the decision's model if not given).
    detail : str
        The error, or the ``notify`` action's message.
    channels : iterable of str
        More channels (a policy's ``spec.notify``); with ``only``, exactly these.
    only : bool
        Send to ``channels`` alone, ignoring subscriptions (the ``notify`` action).
    title : str, optional
        Replaces the built title.
    key : str, optional
        What makes this event unique, for the dedup key (default: the run, else the decision).

    Raises
    ------
    UnknownChannelError
        With ``only``, when a named channel is not configured.
    """
    at = ensure_utc(at)
    channels = list(channels)
    if only:
        unknown = [c for c in channels if c not in settings.channels]
        if unknown:
            raise UnknownChannelError(f"no notification channel named {', '.join(map(repr, unknown))}; "
                                      f"configured: {', '.join(sorted(settings.channels)) or 'none'}")
        names = list(dict.fromkeys(channels))
    else:
        names = recipients(settings, event, channels)
    if not names:
        return []
    if model is None and decision is not None:
        row = session.get(ManagedModel, decision.model_id)
        model = row.name if row is not None else None
    message = build(event, at=at, model=model, decision=decision, run=run, detail=detail, title=title,
                    dashboard_url=settings.dashboard_url)
    subject = key or (f"run-{run.id}" if run is not None else f"decision-{decision.id}" if decision is not None
                      else f"{model}-{at.isoformat()}")
    created: list[Row] = []
    for name in names:
        row, new = store.enqueue(session, Row(
            created_at=at, event=event, channel=name, model_id=decision.model_id if decision is not None else None,
            decision_id=decision.id if decision is not None else None,
            action_run_id=run.id if run is not None else None,
            title=message.title[:300], body=message.body(),
            payload={**message.model_dump(mode="json"), "notify_type": message.notify_type},
            next_attempt_at=at, dedup_key=f"{event}/{subject}/{name}"[:300]))
        if new:
            created.append(row)
    return created


@dataclass
class DeliveryReport:
    """What one delivery pass did, by notification (``notification <id> to <channel>``)."""

    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deferred: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "retrying": self.retrying, "failed": self.failed, "deferred": self.deferred}

    @property
    def problems(self) -> list[str]:
        """One line per failed attempt, for the tick report's warnings."""
        return [*self.retrying, *self.failed]


def retry_delay(settings: NotificationSettings, attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: doubling from ``retry_delay``, capped.

    >>> from mape.config import NotificationSettings
    >>> [retry_delay(NotificationSettings(retry_delay="1m", max_retry_delay="5m"), n).seconds for n in (1, 2, 3, 4)]
    [60, 120, 240, 300]
    """
    return min(settings.retry_delay * 2 ** max(attempts - 1, 0), settings.max_retry_delay)


def deliver(engine: Engine, settings: NotificationSettings, at: datetime, *, actor: str,
            monotonic: Callable[[], float] = time.monotonic) -> DeliveryReport:
    """Send every due notification, within the settings' time budget; never raises for a channel's failure."""
    at = ensure_utc(at)
    report = DeliveryReport()
    with session_scope(engine) as session:
        due = store.due(session, at)
    started = monotonic()
    for row in due:
        if monotonic() - started >= settings.budget.total_seconds():
            report.deferred += 1
            continue
        if not store.claim(engine, row, lease_until=at + settings.retry_delay):
            continue
        attempts = row.attempts + 1
        channel = settings.channels.get(row.channel)
        if channel is None:
            result = SendResult(ok=False, error=f"channel {row.channel!r} is no longer configured")
        else:
            result = send(channel.urls, title=row.title, body=row.body,
                          notify_type=row.payload.get("notify_type", "info"), timeout=settings.timeout,
                          skip=set(row.delivered or []))
        _record(engine, settings, row, attempts, result, at, actor, report, final=channel is None)
    return report


def _record(engine: Engine, settings: NotificationSettings, row: Row, attempts: int, result: SendResult,
            at: datetime, actor: str, report: DeliveryReport, *, final: bool) -> None:
    name = f"notification {row.id} to {row.channel}"
    payload: dict[str, Any] = {"notification": row.id, "channel": row.channel, "event": row.event,
                               "decision": row.decision_id, "attempts": attempts, "targets": list(result.targets),
                               "seconds": round(result.seconds, 3)}
    with session_scope(engine) as session:
        if result.ok:
            store.mark(session, row.id, state=NotificationState.sent.value, at=at, delivered=list(result.delivered))
            kind = "notification.sent"
            report.sent.append(name)
            log.info("%s sent after %d attempt(s)", name.capitalize(), attempts)
        elif final or attempts >= settings.max_attempts:
            store.mark(session, row.id, state=NotificationState.failed.value, at=at, error=result.error,
                       delivered=list(result.delivered))
            kind = "notification.failed"
            payload["error"] = result.error
            report.failed.append(f"{name} failed after {attempts} attempt(s), giving up: {result.error}")
            log.error("%s failed after %d attempt(s), giving up: %s", name.capitalize(), attempts, result.error)
        else:
            wait = retry_delay(settings, attempts)
            store.mark(session, row.id, state=NotificationState.pending.value, at=at, error=result.error,
                       delivered=list(result.delivered), next_attempt_at=at + wait)
            kind = "notification.retrying"
            payload.update(error=result.error, next_attempt_at=(at + wait).isoformat())
            report.retrying.append(f"{name} failed (attempt {attempts} of {settings.max_attempts}), "
                                   f"retrying in {int(wait.total_seconds())}s: {result.error}")
            log.warning("%s failed (attempt %d of %d); retrying in %ds: %s", name.capitalize(), attempts,
                        settings.max_attempts, int(wait.total_seconds()), result.error)
        audit.record(session, actor=actor, kind=kind, subject=name, payload=payload, time=at)
