"""The retention pass: thin the knowledge base so that a long-running controller's database stays bounded.

Who calls it: :meth:`mape.controller.Controller.retain` at the end of every
tick (:func:`run_if_due` runs a pass at most once per period, however many
ticks and controllers share the knowledge base) and ``mape db prune`` (a pass
now, or a dry run). The benchmark ``benchmarks/retention.py`` measures it.

What a pass does, all in SQL, in batches of about ``batch_rows`` raw rows
(each batch its own transaction, so memory and lock times stay bounded):

- **Raw observations older than the cutoff** (``at - raw_for``, rounded
  down to a whole bucket) are replaced by one row per model, sensor, metric,
  labels and bucket of ``bucket`` (aligned on the Unix epoch): ``time`` is the
  bucket's start, ``value`` the mean of the bucket's values, ``samples`` how
  many values the mean weighs (0 when they were all null), ``value_min`` and
  ``value_max`` their range. Labels are grouped by their JSON text (PostgreSQL's
  ``json`` has no equality operator).
- Downsampling is **idempotent**: a second pass finds no raw row past the
  cutoff and changes nothing. A raw row that arrives late in a bucket already
  downsampled is merged with that bucket's row, weighted by ``samples``, so a
  mean is never an average of averages.
- **Evidence is kept**: an observation whose id a symptom, a decision or an
  action run's verification names (any ``observation_id`` in their JSON, e.g.
  a symptom's ``evidence.opened_by``) stays as it is, with its id.
- **Old ticks** keep their row but lose their report (``summary``), the
  bulkiest thing they hold, once older than the cutoff.
- Nothing else is touched: decisions, action runs, model versions, audit
  events and policy versions are never deleted.

Rows inserted while a pass runs are left to the next pass (the pass works on
ids up to the largest it saw at its start). The file of a SQLite knowledge
base does not shrink: its free pages are reused by the next inserts
(``mape db prune --vacuum`` rewrites the file, holding every other writer
off while it does).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import and_, bindparam, column, false, func, or_, select, text, update
from sqlalchemy.engine import Connection, Engine

from knowledge.tables import Observation, RetentionState
from mape._util.timeutil import ensure_utc, utcnow
from mape.errors import InvalidParameterError

__all__ = ["EVIDENCE_COLUMNS", "PRUNED_SUMMARY", "RetentionReport", "evidence_ids", "run_if_due", "run_pass",
           "storage", "thin", "vacuum_if_unattended", "vacuum_tables"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: JSON columns that may name observations as evidence (an ``observation_id`` key, at any depth).
EVIDENCE_COLUMNS: tuple[tuple[str, str], ...] = (("symptom", "evidence"), ("decision", "evidence"),
                                                 ("action_run", "verification"), ("action_run", "result"))
#: What an old tick's ``summary`` becomes.
PRUNED_SUMMARY: dict[str, Any] = {"pruned": "report removed by the retention pass"}
_PRUNED_TEXT = json.dumps(PRUNED_SUMMARY)
_STATE_ID = 1


class RetentionReport(BaseModel):
    """What one retention pass did (or, with ``dry_run``, would do); ``mape db prune`` prints it as JSON."""

    at: datetime = Field(description="Logical time of the pass.")
    cutoff: datetime = Field(description="Raw observations and tick reports before this were thinned.")
    bucket_seconds: int
    dry_run: bool = False
    complete: bool = Field(True, description="False: the time budget stopped it; the next pass goes on.")
    observations_before: int = 0
    observations_after: int = 0
    raw_rows_replaced: int = Field(0, description="Raw observations folded into bucket rows (deleted).")
    bucket_rows_merged: int = Field(0, description="Earlier bucket rows folded again with late raw rows (deleted).")
    bucket_rows_written: int = Field(0, description="Bucket rows inserted.")
    evidence_kept: int = Field(0, description="Observations named as evidence, kept as they are.")
    tick_reports_pruned: int = 0
    batches: int = 0
    seconds: float = 0.0
    storage_before: dict[str, int] = Field(default_factory=dict, description="Bytes, where the backend tells.")
    storage_after: dict[str, int] = Field(default_factory=dict)
    vacuumed: bool = Field(False, description="PostgreSQL with autovacuum off: the pass ran VACUUM itself, so the "
                                              "space of the rows it deleted is reused (see vacuum_if_unattended).")

    @property
    def changed(self) -> bool:
        return bool(self.raw_rows_replaced or self.bucket_rows_merged or self.tick_reports_pruned)


# --------------------------------------------------------------------------- SQL per backend


class _Sql:
    """The few expressions that differ between SQLite and PostgreSQL."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"
        if not self.postgres and dialect != "sqlite":
            raise InvalidParameterError(f"the retention pass supports SQLite and PostgreSQL, not {dialect}")

    def labels_key(self, alias: str) -> str:
        return f"CAST({alias}.labels AS TEXT)" if self.postgres else f"{alias}.labels"

    def labels_value(self, column: str) -> str:
        return f"CAST({column} AS JSON)" if self.postgres else column

    def bucket(self, alias: str) -> str:
        """The start of the bucket of ``alias.time``, of the column's own type (SQLite: its exact text form)."""
        if self.postgres:
            return (f"to_timestamp(CAST(floor(extract(epoch from {alias}.time) / :width) * :width "
                    f"AS DOUBLE PRECISION))")
        return (f"strftime('%Y-%m-%d %H:%M:%S', (CAST(strftime('%s', {alias}.time) AS INTEGER) / :width) * :width, "
                f"'unixepoch') || '.000000'")

    def json_text(self, column: str) -> str:
        return f"CAST({column} AS TEXT)" if self.postgres else column

    def temp_tables(self) -> list[str]:
        real, stamp, key = ("DOUBLE PRECISION", "TIMESTAMP WITH TIME ZONE", "BIGINT") if self.postgres else \
            ("REAL", "TEXT", "INTEGER")
        return [f"CREATE TEMPORARY TABLE IF NOT EXISTS retention_keep (id {key} PRIMARY KEY)",
                f"CREATE TEMPORARY TABLE IF NOT EXISTS retention_groups (model_id INTEGER, sensor TEXT, metric TEXT, "
                f"labels_key TEXT, bucket {stamp}, n {key}, wsum {real}, vmin {real}, vmax {real}, "
                f"raw_rows {key}, obs_id {key})"]


def _time_params(*names: str) -> list[Any]:
    """Bind parameters typed as ``observation.time``, so SQLite compares them in the stored text form."""
    kind = Observation.__table__.c.time.type  # type: ignore[attr-defined]
    return [bindparam(name, type_=kind) for name in names]


def _statements(sql: _Sql) -> dict[str, Any]:
    keep = "NOT EXISTS (SELECT 1 FROM retention_keep k WHERE k.id = o.id)"
    raw = "o.samples IS NULL AND o.time >= :b0 AND o.time < :b1 AND o.id <= :max_id"
    groups = text(
        f"INSERT INTO retention_groups (model_id, sensor, metric, labels_key, bucket, n, wsum, vmin, vmax, raw_rows) "
        f"SELECT o.model_id, o.sensor, o.metric, {sql.labels_key('o')}, {sql.bucket('o')}, "
        f"SUM(CASE WHEN o.value IS NULL THEN 0 ELSE 1 END), SUM(o.value), MIN(o.value), MAX(o.value), COUNT(*) "
        f"FROM observation o WHERE {raw} AND {keep} GROUP BY 1, 2, 3, 4, 5"
    ).bindparams(*_time_params("b0", "b1"))
    merge = text(  # earlier bucket rows of the same series and bucket (raw rows that came late): weighted again
        f"INSERT INTO retention_groups (model_id, sensor, metric, labels_key, bucket, n, wsum, vmin, vmax, raw_rows, "
        f"obs_id) "
        f"SELECT o.model_id, o.sensor, o.metric, g.labels_key, g.bucket, o.samples, o.value * o.samples, "
        f"o.value_min, o.value_max, 0, o.id FROM observation o JOIN "
        f"(SELECT DISTINCT model_id, sensor, metric, labels_key, bucket FROM retention_groups) g "
        f"ON o.model_id = g.model_id AND o.metric = g.metric AND o.time = g.bucket AND o.sensor = g.sensor "
        f"AND {sql.labels_key('o')} = g.labels_key WHERE o.samples IS NOT NULL AND {keep}")
    delete_raw = text(f"DELETE FROM observation WHERE id IN (SELECT o.id FROM observation o WHERE {raw} AND {keep})"
                      ).bindparams(*_time_params("b0", "b1"))
    delete_merged = text("DELETE FROM observation WHERE id IN "
                         "(SELECT obs_id FROM retention_groups WHERE obs_id IS NOT NULL)")
    write = text(
        f"INSERT INTO observation (time, model_id, sensor, metric, value, labels, samples, value_min, value_max) "
        f"SELECT g.bucket, g.model_id, g.sensor, g.metric, "
        f"CASE WHEN SUM(g.n) > 0 THEN CAST(SUM(g.wsum) AS DOUBLE PRECISION) / CAST(SUM(g.n) AS DOUBLE PRECISION) "
        f"END, {sql.labels_value('g.labels_key')}, CAST(SUM(g.n) AS INTEGER), MIN(g.vmin), MAX(g.vmax) "
        f"FROM retention_groups g GROUP BY g.model_id, g.sensor, g.metric, g.labels_key, g.bucket")
    oldest = text(
        f"SELECT MIN(o.time) AS oldest FROM observation o WHERE o.samples IS NULL AND o.time >= :lower "
        f"AND o.time < :cutoff AND o.id <= :max_id AND {keep}"
    ).bindparams(*_time_params("lower", "cutoff")).columns(
        column("oldest", Observation.__table__.c.time.type))  # type: ignore[attr-defined]
    prune_ticks = text(
        f"UPDATE tick SET summary = {sql.labels_value(':pruned')} WHERE id IN (SELECT id FROM tick "
        f"WHERE at < :cutoff AND LENGTH({sql.json_text('summary')}) > :size ORDER BY id LIMIT :n)"
    ).bindparams(bindparam("cutoff", type_=Observation.__table__.c.time.type))  # type: ignore[attr-defined]
    return {"oldest": oldest, "groups": groups, "merge": merge, "delete_raw": delete_raw, "delete_merged": delete_merged,
            "write": write, "prune_ticks": prune_ticks}


def _lock(connection: Connection) -> None:
    """SQLite: take the write lock first, so a batch that read never fails to upgrade its snapshot to a write."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# --------------------------------------------------------------------------- evidence


def _observation_ids(value: Any) -> Iterator[int]:
    """Every ``observation_id`` (and every id in an ``observation_ids`` list) in a JSON value, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "observation_id" and isinstance(item, int) and not isinstance(item, bool):
                yield item
            elif key == "observation_ids" and isinstance(item, list):
                yield from (i for i in item if isinstance(i, int) and not isinstance(i, bool))
            else:
                yield from _observation_ids(item)
    elif isinstance(value, list):
        for item in value:
            yield from _observation_ids(item)


def evidence_ids(connection: Connection, columns: Iterable[tuple[str, str]] = EVIDENCE_COLUMNS) -> set[int]:
    """The ids of the observations the knowledge base names as evidence (rows the pass must keep).

    Only the rows whose JSON text mentions ``observation_id`` are read (a
    ``LIKE`` in the database), a batch at a time.

    >>> sorted(_observation_ids({"opened_by": [{"observation_id": 7}, {"observation_id": 9}], "x": {"y": 1}}))
    [7, 9]
    """
    sql = _Sql(connection.dialect.name)
    found: set[int] = set()
    for table, column in columns:
        expr = sql.json_text(column)
        result = connection.execute(text(f"SELECT {expr} FROM {table} WHERE {expr} LIKE '%observation_id%'")
                                    .execution_options(yield_per=500))
        for (raw,) in result:
            value = json.loads(raw) if isinstance(raw, str) else raw
            found.update(_observation_ids(value))
    return found


# --------------------------------------------------------------------------- storage


def storage(connection: Connection) -> dict[str, int]:
    """What the backend tells of its size: SQLite's file and free pages; PostgreSQL's observation and tick tables."""
    if connection.dialect.name == "sqlite":
        page = connection.exec_driver_sql("PRAGMA page_size").scalar_one()
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = connection.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        return {"file_bytes": int(page * pages), "free_bytes": int(page * free)}
    if connection.dialect.name == "postgresql":
        row = connection.execute(text("SELECT pg_total_relation_size('observation'), pg_total_relation_size('tick'), "
                                      "pg_database_size(current_database())")).one()
        return {"observation_bytes": int(row[0]), "tick_bytes": int(row[1]), "database_bytes": int(row[2])}
    return {}


def _count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(Observation.__table__)).scalar_one())  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the pass


def _floor(value: datetime, width: int) -> datetime:
    seconds = int((ensure_utc(value) - _EPOCH) // timedelta(seconds=1))
    return _EPOCH + timedelta(seconds=seconds - seconds % width)


def _ceil(value: datetime, width: int) -> datetime:
    floor = _floor(value, width)
    return floor if floor == ensure_utc(value) else floor + timedelta(seconds=width)


def _check(name: str, value: timedelta, least: timedelta) -> None:
    if not isinstance(value, timedelta) or value < least:
        raise InvalidParameterError.for_parameter(name, "thin", f"a duration of at least {least}", value)


def thin(engine: Engine, *, at: datetime, raw_for: timedelta, bucket: timedelta, batch_rows: int = 50_000,
         budget: timedelta | None = None, dry_run: bool = False,
         monotonic: Callable[[], float] = time.monotonic) -> RetentionReport:
    """Run one retention pass over the knowledge base at ``engine``, at logical time ``at``.

    Parameters
    ----------
    engine : Engine
        The knowledge base (SQLite or PostgreSQL, at schema 0012 or later).
    at : datetime
        Logical time of the pass (aware); the cutoff is ``at - raw_for``,
        rounded down to a whole bucket.
    raw_for : timedelta
        How long raw observations and tick reports are kept as they are.
    bucket : timedelta
        Width of the buckets older raw observations are folded into (whole seconds).
    batch_rows : int
        About this many raw rows per batch (one transaction each).
    budget : timedelta, optional
        Stop after the batch that ends past this much wall-clock time
        (``complete`` false); none: run to the end.
    dry_run : bool
        Do everything, report it, and roll each batch back.
    """
    at = ensure_utc(at)
    _check("raw_for", raw_for, timedelta(0))
    _check("bucket", bucket, timedelta(seconds=1))
    if bucket % timedelta(seconds=1):
        raise InvalidParameterError.for_parameter("bucket", "thin", "a whole number of seconds", bucket)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidParameterError.for_parameter("batch_rows", "thin", "an int of at least 1", batch_rows)
    width = int(bucket.total_seconds())
    cutoff = _floor(at - raw_for, width)
    started = monotonic()
    deadline = None if budget is None else started + budget.total_seconds()
    report = RetentionReport(at=at, cutoff=cutoff, bucket_seconds=width, dry_run=dry_run)
    sql = _Sql(engine.dialect.name)
    statements = _statements(sql)
    table = Observation.__table__  # type: ignore[attr-defined]
    raw = and_(table.c.samples.is_(None), table.c.time < cutoff)
    with engine.connect() as connection:
        try:
            with connection.begin():
                report.storage_before = storage(connection)
                report.observations_before = _count(connection)
                max_id = connection.execute(select(func.max(table.c.id))).scalar_one() or 0
                for ddl in sql.temp_tables():
                    connection.exec_driver_sql(ddl)
                connection.exec_driver_sql("DELETE FROM retention_keep")
                kept = sorted(evidence_ids(connection))
                for start in range(0, len(kept), 1000):
                    connection.execute(text("INSERT INTO retention_keep (id) VALUES (:id)"),
                                       [{"id": i} for i in kept[start:start + 1000]])
                report.evidence_kept = len(kept)
            lower: datetime | None = None
            while True:
                if deadline is not None and report.batches and monotonic() > deadline:
                    report.complete = False
                    break
                oldest = connection.execute(statements["oldest"], {
                    "cutoff": cutoff, "lower": lower or _EPOCH, "max_id": max_id}).scalar_one()
                connection.rollback()
                if oldest is None:
                    break
                b0 = _floor(oldest, width)
                nth = connection.execute(select(table.c.time).where(raw, table.c.time >= b0)
                                         .order_by(table.c.time).offset(batch_rows).limit(1)).scalar_one_or_none()
                b1 = cutoff if nth is None else min(cutoff, max(_ceil(nth, width), b0 + timedelta(seconds=width)))
                connection.rollback()
                with connection.begin() as batch:
                    _lock(connection)
                    params = {"b0": b0, "b1": b1, "max_id": max_id, "width": width}
                    connection.exec_driver_sql("DELETE FROM retention_groups")
                    connection.execute(statements["groups"], params)
                    connection.execute(statements["merge"])
                    report.raw_rows_replaced += connection.execute(statements["delete_raw"], params).rowcount
                    report.bucket_rows_merged += connection.execute(statements["delete_merged"]).rowcount
                    report.bucket_rows_written += connection.execute(statements["write"]).rowcount
                    connection.exec_driver_sql("DELETE FROM retention_groups")
                    if dry_run:
                        batch.rollback()
                report.batches += 1
                lower = b1
            while report.complete:
                if deadline is not None and report.batches and monotonic() > deadline:
                    report.complete = False
                    break
                with connection.begin() as batch:
                    _lock(connection)
                    pruned = connection.execute(statements["prune_ticks"], {
                        "pruned": _PRUNED_TEXT, "cutoff": cutoff, "size": len(_PRUNED_TEXT), "n": batch_rows}).rowcount
                    if dry_run:
                        batch.rollback()
                report.tick_reports_pruned += pruned
                if pruned < batch_rows or dry_run:
                    break
            with connection.begin():
                report.observations_after = _count(connection)
                report.storage_after = storage(connection)
        finally:
            if connection.in_transaction():
                connection.rollback()
            with connection.begin():
                connection.exec_driver_sql("DROP TABLE IF EXISTS retention_groups")
                connection.exec_driver_sql("DROP TABLE IF EXISTS retention_keep")
    report.seconds = round(monotonic() - started, 3)
    return report


# --------------------------------------------------------------------------- once per period


def _state() -> Any:
    return RetentionState.__table__  # type: ignore[attr-defined]


def _claim(connection: Connection, *, at: datetime, every: timedelta, claimed_by: str, force: bool) -> bool:
    """Move ``retention_state.started_at`` to ``at`` if a pass is due (or ``force``); True when this caller got it."""
    state = _state()
    due = or_(state.c.started_at.is_(None), state.c.started_at <= at - every,
              and_(state.c.complete == false(), state.c.finished_at.is_not(None)))
    where = [state.c.id == _STATE_ID] + ([] if force else [due])
    values = {"started_at": at, "finished_at": None, "complete": None, "claimed_by": claimed_by[:300]}
    claimed = connection.execute(update(state).where(*where).values(**values)).rowcount == 1
    if not claimed and force:  # the row migration 0012 writes is gone: write it again
        connection.execute(state.insert().values(id=_STATE_ID, report={}, **values))
        claimed = True
    return claimed


def _record(engine: Engine, *, at: datetime, claimed_by: str, complete: bool | None, report: dict[str, Any]) -> None:
    state = _state()
    with engine.begin() as connection:
        connection.execute(update(state).where(state.c.id == _STATE_ID, state.c.started_at == at,
                                               state.c.claimed_by == claimed_by[:300])
                           .values(finished_at=utcnow(), complete=complete, report=report))


def run_pass(engine: Engine, *, at: datetime, raw_for: timedelta, bucket: timedelta, claimed_by: str,
             every: timedelta = timedelta(0), force: bool = False, batch_rows: int = 50_000,
             budget: timedelta | None = None) -> RetentionReport | None:
    """Claim a pass (due once per ``every``, or at once with ``force``), run it and record it; None when not due.

    The claim is one conditional UPDATE of ``retention_state``, so of
    several processes asking at once one runs the pass. A pass the budget
    stopped is due again at once; one that failed waits for ``every``
    (the error is recorded, then raised).
    """
    at = ensure_utc(at)
    with engine.begin() as connection:
        if not _claim(connection, at=at, every=every, claimed_by=claimed_by, force=force):
            return None
    try:
        report = thin(engine, at=at, raw_for=raw_for, bucket=bucket, batch_rows=batch_rows, budget=budget)
    except Exception as exc:
        _record(engine, at=at, claimed_by=claimed_by, complete=None,
                report={"error": f"{type(exc).__name__}: {exc}"})
        raise
    if report.changed:
        report.vacuumed = vacuum_if_unattended(engine)
    _record(engine, at=at, claimed_by=claimed_by, complete=report.complete, report=report.model_dump(mode="json"))
    return report


def vacuum_if_unattended(engine: Engine) -> bool:
    """On PostgreSQL with autovacuum off, ``VACUUM`` the knowledge base's tables; True when it ran.

    A pass deletes the raw rows it folds and rewrites old tick reports; their
    space is reused only once a ``VACUUM`` has marked it free, which is
    autovacuum's job. Where a server runs with ``autovacuum = off`` (this
    project's test server does; so do some tuned installations), nothing
    would, and the database would grow by every pass's deletions: the
    PostgreSQL soak measured 6 MB a day against SQLite's 0.9. A plain
    ``VACUUM`` (not ``FULL``) takes no lock that stops reads or writes, and
    skips the pages the visibility map says are clean. With autovacuum on,
    the pass leaves it to the server. SQLite reuses its free pages by itself.
    """
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if connection.exec_driver_sql("SHOW autovacuum").scalar_one() != "off":
            return False
        present = set(connection.execute(text("SELECT tablename FROM pg_tables "
                                              "WHERE schemaname = current_schema()")).scalars())
        vacuum_tables(connection, sorted(present & set(Observation.metadata.tables)))
    return True


def vacuum_tables(connection: Connection, tables: Iterable[str]) -> None:
    """One plain PostgreSQL ``VACUUM`` of ``tables`` (of the connection's schema); the connection must autocommit.

    Only the knowledge base's own tables: a database it shares with other
    applications keeps their vacuuming to them. Besides the rows a pass
    deletes, autovacuum's absence leaves the engine's own updates' dead rows
    (leases renewed every few seconds, action runs, symptoms), so an
    unattended pass vacuums all of its tables, not only ``observation``.
    """
    names = [connection.dialect.identifier_preparer.quote(name) for name in tables]
    if names:
        connection.exec_driver_sql("VACUUM " + ", ".join(names))


def run_if_due(engine: Engine, *, at: datetime, every: timedelta, raw_for: timedelta, bucket: timedelta,
               claimed_by: str, batch_rows: int = 50_000, budget: timedelta | None = None) -> RetentionReport | None:
    """A pass if none ran within ``every`` before ``at`` (or the last one ran out of budget); None otherwise."""
    _check("every", every, timedelta(0))
    return run_pass(engine, at=at, raw_for=raw_for, bucket=bucket, claimed_by=claimed_by, every=every,
                    batch_rows=batch_rows, budget=budget)
