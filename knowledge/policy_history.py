"""What the knowledge base remembers of each policy: its firings by day, its versions, and its trail.

Who calls it: the dashboard's Policies page. Every read is bounded so the
page stays fast on a large knowledge base: firings are counted in SQL by
policy, UTC day and status over a range of at most :data:`MAX_DAYS` of tick
times (the ``ix_decision_tick_at`` index), versions are read by name (the
``ix_policy_version_name`` index) up to a limit, and the trail's events by
time (``ix_audit_event_time``) up to a limit. Works on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from knowledge.tables import AuditEvent, Decision, PolicyVersion
from mape._util.timeutil import ensure_utc
from mape.errors import InvalidParameterError

#: The longest range of firings counted at once.
MAX_DAYS = 90
#: The audit events about policies that the trail shows.
POLICY_EVENTS = ("policy.loaded", "policy.refused", "policy.mode_changed", "policy.paused", "policy.resumed")


@dataclass(frozen=True)
class FiringDay:
    """The decisions one policy made on one UTC day with one status, and the newest one's tick."""

    policy: str
    day: date
    status: str
    decisions: int
    last: datetime


@dataclass(frozen=True)
class VersionSummary:
    """How many versions of a policy were recorded, and when the newest was first loaded."""

    versions: int
    newest: datetime


def _utc_day(column: Any, dialect: str) -> Any:
    """The UTC day of a time column as ``YYYY-MM-DD`` text, in SQL."""
    if dialect == "sqlite":  # stored as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'
        return func.substr(column, 1, 10)
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.date(column)


def firing_by_day(session: Session, *, since: datetime, until: datetime,
                  policy: str | None = None) -> list[FiringDay]:
    """The planner's decisions with ticks in ``[since, until]``, counted by policy, UTC day and status.

    A decision is a firing: the planner writes one whenever a policy fires for
    a model, whatever becomes of it (proposed, dry_run, suppressed, ...).
    Ordered by policy, day and status.

    Raises
    ------
    InvalidParameterError
        The range is longer than :data:`MAX_DAYS` days, or ends before it starts.
    """
    since, until = ensure_utc(since), ensure_utc(until)
    if until < since or until - since > timedelta(days=MAX_DAYS):
        raise InvalidParameterError.for_parameter(
            "until", "firing_by_day", f"at most {MAX_DAYS} days after since ({since.isoformat()})", until.isoformat())
    day = _utc_day(col(Decision.tick_at), session.get_bind().dialect.name).label("day")
    query = (select(Decision.policy_name, day, Decision.status, func.count().label("n"),
                    func.max(Decision.tick_at).label("last"))
             .where(col(Decision.tick_at) >= since, col(Decision.tick_at) <= until)
             .group_by(Decision.policy_name, day, Decision.status)
             .order_by(Decision.policy_name, day, Decision.status))
    if policy is not None:
        query = query.where(Decision.policy_name == policy)
    return [FiringDay(policy=name, day=date.fromisoformat(str(text)[:10]), status=status, decisions=int(n),
                      last=ensure_utc(last))
            for name, text, status, n, last in session.connection().execute(query)]


def versions(session: Session, name: str, *, limit: int = 50) -> list[PolicyVersion]:
    """The recorded versions of policy ``name``, newest first (at most ``limit``)."""
    return list(session.exec(select(PolicyVersion).where(PolicyVersion.name == name)
                             .order_by(col(PolicyVersion.loaded_at).desc(), col(PolicyVersion.id).desc())
                             .limit(limit)))


def version_summaries(session: Session) -> dict[str, VersionSummary]:
    """By policy name: the versions recorded and the newest's load time (one GROUP BY)."""
    rows = session.connection().execute(
        select(PolicyVersion.name, func.count(), func.max(PolicyVersion.loaded_at)).group_by(PolicyVersion.name))
    return {name: VersionSummary(versions=int(n), newest=ensure_utc(newest)) for name, n, newest in rows}


def policy_events(session: Session, *, since: datetime, limit: int = 100) -> list[AuditEvent]:
    """The trail's events about policies since ``since``, newest first (at most ``limit``).

    Loaded and refused files (the controller's), mode changes, pauses and resumes.
    """
    return list(session.exec(select(AuditEvent)
                             .where(col(AuditEvent.time) >= ensure_utc(since), col(AuditEvent.kind).in_(POLICY_EVENTS))
                             .order_by(col(AuditEvent.time).desc(), col(AuditEvent.id).desc()).limit(limit)))
