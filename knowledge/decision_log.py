"""The decision log: every decision with its model, policy version and action run, filtered and paged in SQL.

Who calls it: the dashboard's Decisions page (the listing, its filters, the
detail of one decision, the daily counts it draws, the CSV export) and its
audit trail section (recent events, filtered by kind and actor). Every read
is bounded: a page of rows (``LIMIT``/``OFFSET``, newest first), a count, a
``GROUP BY`` per day, ``SELECT DISTINCT`` for the filters' choices, and an
export streamed row by row up to a stated cap. Decisions by model use the
``(model_id, action, created_at)`` index; audit events are paged along their
primary key. The same SQL runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TextIO

from sqlalchemy import Select, func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from knowledge.tables import ActionRun, AuditEvent, Decision, ManagedModel, PolicyVersion
from mape._util.timeutil import ensure_utc

#: Rows a page of the listing holds by default.
PAGE_SIZE = 50
#: Rows an export holds at most: past it the file says so in its last line.
CSV_CAP = 100_000
#: The columns of the CSV export, in order (the evidence is left out: it is large and shown per decision).
CSV_COLUMNS = ("id", "created_at", "model", "policy", "policy_version", "policy_sha256", "action", "status", "reason",
               "decided_by", "decided_at", "action_run_id", "run_state", "verdict", "flow_run_id", "params")


def _names(owner: str, field_name: str, values: Sequence[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"The '{field_name}' parameter of {owner} must be a sequence of names. "
                         f"Got {values!r} instead.")
    return tuple(values)


@dataclass(frozen=True)
class DecisionFilter:
    """Which decisions to list: any of the named models, policies, actions and statuses, created in ``[since, until)``.

    An empty tuple means every value. Times are aware UTC (a naive time is
    taken to be UTC).
    """

    models: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("models", "policies", "actions", "statuses"):
            object.__setattr__(self, name, _names("DecisionFilter", name, getattr(self, name)))
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                raise ValueError(f"The '{name}' parameter of DecisionFilter must be a datetime or None. "
                                 f"Got {value!r} instead.")
            if value is not None:
                object.__setattr__(self, name, ensure_utc(value))
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError(f"The 'until' parameter of DecisionFilter must be after 'since' ({self.since.isoformat()})."
                             f" Got {self.until.isoformat()} instead.")


@dataclass(frozen=True)
class FilterOptions:
    """The values the filters can take: what the decisions hold, and the span of their times (None: no decision)."""

    models: tuple[str, ...]
    policies: tuple[str, ...]
    actions: tuple[str, ...]
    statuses: tuple[str, ...]
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True)
class DecisionRow:
    """One line of the listing: a decision without its evidence, with its model's name, policy version and run."""

    id: int
    created_at: datetime
    model: str
    policy: str
    policy_version: int | None  # the policy's n-th version loaded (None: the version was never recorded)
    policy_sha256: str | None
    action: str
    status: str
    reason: str
    decided_by: str | None
    decided_at: datetime | None
    action_run_id: int | None
    run_state: str | None
    verdict: str | None
    flow_run_id: str | None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecisionDetail:
    """One decision in full: the row itself, its model's name, the policy version that made it, its action run."""

    decision: Decision
    model: str
    policy_version: PolicyVersion | None
    policy_version_number: int | None
    run: ActionRun | None


def _versions() -> Any:
    """Policy versions numbered per policy in load order (1, 2, ...): a subquery to join decisions with."""
    number = func.row_number().over(partition_by=PolicyVersion.name,
                                    order_by=(col(PolicyVersion.loaded_at), col(PolicyVersion.id)))
    return select(PolicyVersion.id, PolicyVersion.name, PolicyVersion.sha256, number.label("number")).subquery()


def _conditions(flt: DecisionFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if flt.models:  # as model ids, so that the (model_id, action, created_at) index serves it
        ids = select(ManagedModel.id).where(col(ManagedModel.name).in_(flt.models))
        where.append(col(Decision.model_id).in_(ids))
    if flt.policies:
        where.append(col(Decision.policy_name).in_(flt.policies))
    if flt.actions:
        where.append(col(Decision.action).in_(flt.actions))
    if flt.statuses:
        where.append(col(Decision.status).in_(flt.statuses))
    if flt.since is not None:
        where.append(col(Decision.created_at) >= flt.since)
    if flt.until is not None:
        where.append(col(Decision.created_at) < flt.until)
    return where


def _listing(flt: DecisionFilter) -> Select[Any]:
    versions = _versions()
    return (
        select(Decision.id, Decision.created_at, ManagedModel.name, Decision.policy_name, versions.c.number,
               Decision.policy_sha256, Decision.action, Decision.status, Decision.reason, Decision.decided_by,
               Decision.decided_at, ActionRun.id, ActionRun.state, ActionRun.verdict, ActionRun.flow_run_id,
               Decision.params)
        .select_from(Decision)
        .join(ManagedModel, col(ManagedModel.id) == Decision.model_id)
        .outerjoin(ActionRun, col(ActionRun.decision_id) == Decision.id)
        .outerjoin(versions, (versions.c.name == Decision.policy_name) & (versions.c.sha256 == Decision.policy_sha256))
        .where(*_conditions(flt))
        .order_by(col(Decision.created_at).desc(), col(Decision.id).desc())
    )


def _row(values: Sequence[Any]) -> DecisionRow:
    (id_, created, model, policy, number, sha, action, status, reason, by, decided, run_id, state, verdict,
     flow_run, params) = values
    return DecisionRow(id_, ensure_utc(created), model, policy, number, sha, action, status, reason or "", by,
                       ensure_utc(decided) if decided is not None else None, run_id, state, verdict, flow_run,
                       params or {})


def filter_options(session: Session) -> FilterOptions:
    """The distinct models, policies, actions and statuses of the decisions, and their first and last times."""
    def distinct(column: Any) -> tuple[str, ...]:
        return tuple(v for (v,) in session.connection().execute(select(column).distinct().order_by(column)))

    models = session.connection().execute(
        select(ManagedModel.name).where(col(ManagedModel.id).in_(select(Decision.model_id).distinct()))
        .order_by(ManagedModel.name)).scalars().all()
    first, last = session.connection().execute(select(func.min(Decision.created_at),
                                                      func.max(Decision.created_at))).one()
    return FilterOptions(tuple(models), distinct(Decision.policy_name), distinct(Decision.action),
                         distinct(Decision.status), ensure_utc(first) if first is not None else None,
                         ensure_utc(last) if last is not None else None)


def count_decisions(session: Session, flt: DecisionFilter) -> int:
    """How many decisions the filter selects (one ``COUNT``)."""
    query = select(func.count()).select_from(Decision).where(*_conditions(flt))
    return int(session.connection().execute(query).scalar_one())


def decision_page(session: Session, flt: DecisionFilter, *, offset: int = 0, limit: int = PAGE_SIZE) -> list[DecisionRow]:
    """One page of the decisions the filter selects, newest first (by creation time, then id)."""
    if offset < 0:
        raise ValueError(f"The 'offset' parameter of decision_page must be an int >= 0. Got {offset!r} instead.")
    if not 1 <= limit <= CSV_CAP:
        raise ValueError(f"The 'limit' parameter of decision_page must be an int in [1, {CSV_CAP}]. "
                         f"Got {limit!r} instead.")
    rows = session.connection().execute(_listing(flt).offset(offset).limit(limit))
    return [_row(r) for r in rows]


def decision_detail(session: Session, decision_id: int) -> DecisionDetail | None:
    """Decision ``decision_id`` with its model's name, policy version (and its number) and action run; None if absent."""
    decision = session.get(Decision, decision_id)
    if decision is None:
        return None
    model = session.get(ManagedModel, decision.model_id)
    version = number = None
    if decision.policy_sha256:
        versions = _versions()
        found = session.connection().execute(
            select(versions.c.id, versions.c.number)
            .where(versions.c.name == decision.policy_name, versions.c.sha256 == decision.policy_sha256)).first()
        if found is not None:
            version, number = session.get(PolicyVersion, found[0]), int(found[1])
    run = session.exec(select(ActionRun).where(ActionRun.decision_id == decision_id)).first()
    return DecisionDetail(decision, model.name if model is not None else f"model id {decision.model_id}",
                          version, number, run)


def decisions_per_day(session: Session, flt: DecisionFilter) -> list[tuple[date, str, int]]:
    """How many decisions the filter selects per UTC day and status: ``(day, status, count)``, by day (one GROUP BY)."""
    if session.get_bind().dialect.name == "postgresql":
        day: Any = func.date(func.timezone("UTC", Decision.created_at))
    else:  # SQLite keeps UTC text: its first ten characters are the day
        day = func.substr(Decision.created_at, 1, 10)
    query = (select(day.label("day"), Decision.status, func.count()).where(*_conditions(flt))
             .group_by(day, Decision.status).order_by(day, Decision.status))
    return [(d if isinstance(d, date) else date.fromisoformat(d), status, int(n))
            for d, status, n in session.connection().execute(query)]


def write_csv(session: Session, flt: DecisionFilter, out: TextIO, *, cap: int = CSV_CAP) -> int:
    """Write the decisions the filter selects, newest first, to ``out`` as CSV (:data:`CSV_COLUMNS`); the rows written.

    Rows stream from the database in batches into :func:`csv.writer` (no
    frame of the whole result). Past ``cap`` rows the export stops and its
    last line says so, naming the cap.
    """
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    written = 0
    result = session.connection().execution_options(yield_per=2000).execute(_listing(flt).limit(cap + 1))
    for values in result:
        if written == cap:
            writer.writerow([f"# cut at {cap} rows: narrow the filters to export the rest"])
            result.close()
            break
        r = _row(values)
        writer.writerow([r.id, r.created_at.isoformat(), r.model, r.policy, r.policy_version or "",
                         r.policy_sha256 or "", r.action, r.status, r.reason, r.decided_by or "",
                         r.decided_at.isoformat() if r.decided_at else "", r.action_run_id or "", r.run_state or "",
                         r.verdict or "", r.flow_run_id or "", json.dumps(r.params, sort_keys=True, default=str)])
        written += 1
    return written


# --------------------------------------------------------------------------- the audit trail


@dataclass(frozen=True)
class AuditFilter:
    """Which audit events to list: any of the named kinds and actors (empty: all)."""

    kinds: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("kinds", "actors"):
            object.__setattr__(self, name, _names("AuditFilter", name, getattr(self, name)))


def audit_filter_options(session: Session) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The distinct kinds and actors of the audit events."""
    def distinct(column: Any) -> tuple[str, ...]:
        return tuple(v for (v,) in session.connection().execute(select(column).distinct().order_by(column)))

    return distinct(AuditEvent.kind), distinct(AuditEvent.actor)


def _audit_conditions(flt: AuditFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if flt.kinds:
        where.append(col(AuditEvent.kind).in_(flt.kinds))
    if flt.actors:
        where.append(col(AuditEvent.actor).in_(flt.actors))
    return where


def count_audit_events(session: Session, flt: AuditFilter) -> int:
    """How many audit events the filter selects (one ``COUNT``)."""
    query = select(func.count()).select_from(AuditEvent).where(*_audit_conditions(flt))
    return int(session.connection().execute(query).scalar_one())


def audit_page(session: Session, flt: AuditFilter, *, offset: int = 0, limit: int = PAGE_SIZE) -> list[AuditEvent]:
    """One page of the audit events the filter selects, newest first (along the primary key)."""
    if offset < 0 or limit < 1:
        raise ValueError(f"The 'offset' and 'limit' parameters of audit_page must be >= 0 and >= 1. "
                         f"Got {offset!r} and {limit!r} instead.")
    query = (select(AuditEvent).where(*_audit_conditions(flt)).order_by(col(AuditEvent.id).desc())
             .offset(offset).limit(limit))
    return list(session.exec(query))
