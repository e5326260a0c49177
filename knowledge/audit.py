"""The append-only audit trail, each event chained to the previous by sha256.

Who calls it: every state change a person or the engine makes (policy loaded
or refused, decision approved, action finished, version promoted) appends one
event with :func:`record`. :func:`verify_chain` recomputes the chain; the
dashboard shows its verdict. A unique constraint on ``prev_hash`` makes two
concurrent writers unable to fork the chain: the loser's insert fails and is
retried on the new head.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from knowledge.tables import AuditEvent
from mape._util.timeutil import ensure_utc, utcnow

GENESIS = "0" * 64


def _digest(prev_hash: str, time: datetime, actor: str, kind: str, subject: str, payload: dict[str, Any]) -> str:
    body = json.dumps(
        {"prev": prev_hash, "time": time.isoformat(timespec="microseconds"), "actor": actor, "kind": kind,
         "subject": subject, "payload": payload},
        sort_keys=True, default=str, separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


def record(
    session: Session, *, actor: str, kind: str, subject: str = "", payload: dict[str, Any] | None = None,
    time: datetime | None = None, attempts: int = 5,
) -> AuditEvent:
    """Append one event to the chain inside ``session`` (flushed, not committed)."""
    payload = json.loads(json.dumps(payload or {}, default=str))
    time = ensure_utc(time or utcnow())
    for _ in range(attempts):
        head = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(1)).first()
        prev_hash = head.hash if head else GENESIS
        event = AuditEvent(time=time, actor=actor, kind=kind, subject=subject, payload=payload, prev_hash=prev_hash,
                           hash=_digest(prev_hash, time, actor, kind, subject, payload))
        try:
            with session.begin_nested():
                session.add(event)
                session.flush()
            return event
        except IntegrityError:
            continue
    raise RuntimeError(f"could not append audit event {kind!r} after {attempts} attempts: the chain head kept moving")


@dataclass(frozen=True)
class ChainVerdict:
    ok: bool
    events: int
    first_bad_id: int | None = None
    reason: str = ""


def verify_chain(session: Session) -> ChainVerdict:
    """Recompute every hash in id order; report the first event that does not match."""
    prev = GENESIS
    count = 0
    for event in session.exec(select(AuditEvent).order_by(col(AuditEvent.id))):
        count += 1
        if event.prev_hash != prev:
            return ChainVerdict(False, count, event.id, "its prev_hash does not match the previous event's hash")
        expected = _digest(event.prev_hash, event.time, event.actor, event.kind, event.subject, event.payload)
        if expected != event.hash:
            return ChainVerdict(False, count, event.id, "its content does not match its hash (altered)")
        prev = event.hash
    return ChainVerdict(True, count)
