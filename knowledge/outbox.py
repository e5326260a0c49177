"""The notification outbox: queue a message once, find the due ones, claim one, record how an attempt went.

Who calls it: :mod:`mape.notify` queues notifications (the controller after
each tick's plan and actions, the ``notify`` action, the verification code)
and delivers the due ones; the dashboard may read the rows. Delivery progress
lives in the row, not in memory, so a restarted controller resumes the
retries, and a compare-and-set claim keeps two controllers from sending one
row at the same time.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from knowledge.tables import Notification, NotificationState
from mape._util.timeutil import ensure_utc


def enqueue(session: Session, notification: Notification) -> tuple[Notification, bool]:
    """Insert a notification unless one with the same dedup key exists; returns (row, created)."""
    existing = session.exec(select(Notification).where(Notification.dedup_key == notification.dedup_key)).first()
    if existing is not None:
        return existing, False
    try:
        with session.begin_nested():
            session.add(notification)
            session.flush()
    except IntegrityError:
        return session.exec(select(Notification).where(Notification.dedup_key == notification.dedup_key)).one(), False
    return notification, True


def due(session: Session, at: datetime, *, limit: int = 100) -> list[Notification]:
    """Pending notifications whose next attempt is at or before ``at``, oldest first."""
    return list(session.exec(
        select(Notification)
        .where(Notification.state == NotificationState.pending.value,
               col(Notification.next_attempt_at) <= ensure_utc(at))
        .order_by(col(Notification.next_attempt_at), col(Notification.id))
        .limit(limit)
    ).all())


def claim(engine: Engine, row: Notification, *, lease_until: datetime) -> bool:
    """Count one more attempt on ``row`` if nobody else has since it was read; False if another sender has it.

    The row's ``next_attempt_at`` moves to ``lease_until`` at once, so if this
    process dies while sending, the row is tried again after the lease.
    """
    with engine.begin() as conn:
        result = conn.execute(
            update(Notification)
            .where(col(Notification.id) == row.id, col(Notification.state) == NotificationState.pending.value,
                   col(Notification.attempts) == row.attempts)
            .values(attempts=col(Notification.attempts) + 1, next_attempt_at=ensure_utc(lease_until))
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def mark(session: Session, notification_id: int, *, state: str, at: datetime, error: str = "",
         delivered: list[str] | None = None, next_attempt_at: datetime | None = None) -> Notification:
    """Record how an attempt went: ``sent``, ``failed`` (given up), or ``pending`` again until ``next_attempt_at``."""
    row = session.get(Notification, notification_id)
    if row is None:
        raise KeyError(f"no notification {notification_id}")
    NotificationState(state)
    row.state = state
    row.last_error = error
    if delivered is not None:
        row.delivered = sorted(set(delivered))
    if state == NotificationState.sent.value:
        row.sent_at = ensure_utc(at)
    if next_attempt_at is not None:
        row.next_attempt_at = ensure_utc(next_attempt_at)
    session.add(row)
    session.flush()
    return row


def notifications(session: Session, *, decision_id: int | None = None, state: str | None = None,
                  limit: int = 1000) -> list[Notification]:
    """Notifications, newest first, optionally of one decision or in one state."""
    query = select(Notification)
    if decision_id is not None:
        query = query.where(Notification.decision_id == decision_id)
    if state is not None:
        query = query.where(Notification.state == state)
    return list(session.exec(query.order_by(col(Notification.id).desc()).limit(limit)).all())
