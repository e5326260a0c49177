"""The retention pass thins old raw observations into weighted buckets, keeps evidence, and runs once per period."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import select

from knowledge import model_timeline as mt
from knowledge import queries, registry, retention
from knowledge.audit import record
from knowledge.database import session_scope
from knowledge.tables import Decision, Observation, Symptom, Tick, observation_row
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
AT = T0 + timedelta(days=3)
KEEP = dict(raw_for=timedelta(days=1), bucket=timedelta(hours=1))  # cutoff: T0 + 2 days


def _value(i: int, k: int) -> float | None:
    if k == 1 and i % 7 == 0:
        return None  # "no data" now and then
    return float((i * 37 + k * 11) % 101)


def _fill(engine: Engine) -> int:
    """Three days of 10-minute observations of a model: a summary metric and two features' effect sizes."""
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="credit-risk")
        rows = []
        for i in range(3 * 24 * 6):
            at = T0 + timedelta(minutes=10 * i)
            rows.append(observation_row(time=at, model_id=model.id, sensor="drift", metric="drift.share_drifted",
                                        value=_value(i, 0)))
            rows += [observation_row(time=at, model_id=model.id, sensor="drift", metric="drift.feature.effect_size",
                                     value=_value(i, k), labels={"feature": name, "test": "ks"})
                     for k, name in ((1, "age"), (2, "income"))]
        queries.add_observations(session, rows)
        assert model.id is not None
        return model.id


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    with session_scope(engine) as session:
        return [(o.id, o.time, o.model_id, o.sensor, o.metric, o.value, tuple(sorted(o.labels.items())), o.samples,
                 o.value_min, o.value_max)
                for o in session.exec(select(Observation).order_by(Observation.time, Observation.metric,
                                                                     Observation.id))]


def _expected_buckets(raw: list[tuple[Any, ...]], cutoff: datetime) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """From the raw rows before the cutoff: per series and hour, (mean, count of values, min, max)."""
    values: dict[tuple[Any, ...], list[float | None]] = defaultdict(list)
    for _, time, model_id, sensor, metric, value, labels, *_ in raw:
        if time < cutoff:
            hour = time.replace(minute=0, second=0, microsecond=0)
            values[(hour, model_id, sensor, metric, labels)].append(value)
    out = {}
    for key, vs in values.items():
        known = [v for v in vs if v is not None]
        out[key] = ((sum(known) / len(known)) if known else None, len(known),
                    min(known) if known else None, max(known) if known else None)
    return out


def test_old_raw_rows_become_one_weighted_row_per_series_and_hour_and_a_second_pass_changes_nothing(engine: Engine):
    _fill(engine)
    before = _rows(engine)
    cutoff = T0 + timedelta(days=2)
    report = retention.thin(engine, at=AT, **KEEP)
    after = _rows(engine)
    assert report.cutoff == cutoff and report.complete and not report.dry_run
    old = [r for r in after if r[1] < cutoff]
    expected = _expected_buckets(before, cutoff)
    got = {(r[1], r[2], r[3], r[4], r[6]): (r[5], r[7], r[8], r[9]) for r in old}
    assert len(old) == len(got) == len(expected) == 2 * 24 * 3
    for key, (mean, n, low, high) in expected.items():
        value, samples, vmin, vmax = got[key]
        assert (samples, vmin, vmax) == (n, low, high)
        assert value == pytest.approx(mean) if mean is not None else value is None
    assert [r for r in after if r[1] >= cutoff] == [r for r in before if r[1] >= cutoff]  # recent rows untouched
    assert report.raw_rows_replaced == len(before) - len([r for r in before if r[1] >= cutoff])
    assert report.bucket_rows_written == len(old)
    assert (report.observations_before, report.observations_after) == (len(before), len(after))

    again = retention.thin(engine, at=AT, **KEEP)
    assert _rows(engine) == after
    assert (again.raw_rows_replaced, again.bucket_rows_written, again.bucket_rows_merged, again.batches) == (0, 0, 0, 0)


def test_small_batches_give_the_same_rows_as_one_batch(engine: Engine):
    _fill(engine)
    report = retention.thin(engine, at=AT, batch_rows=25, **KEEP)
    assert report.batches > 10
    small = sorted((r[1:] for r in _rows(engine)), key=repr)  # the same rows, maybe in another order of ids
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM observation"))
    _fill(engine)
    retention.thin(engine, at=AT, **KEEP)
    assert sorted((r[1:] for r in _rows(engine)), key=repr) == small


def test_late_raw_rows_are_merged_with_their_bucket_weighted_by_count(engine: Engine):
    model_id = _fill(engine)
    retention.thin(engine, at=AT, **KEEP)
    hour = T0 + timedelta(hours=5)
    with session_scope(engine) as session:
        queries.add_observations(session, [observation_row(time=hour + timedelta(minutes=m), model_id=model_id,
                                                           sensor="drift", metric="drift.share_drifted", value=1000.0)
                                           for m in (1, 2)])
    report = retention.thin(engine, at=AT, **KEEP)
    assert (report.raw_rows_replaced, report.bucket_rows_merged, report.bucket_rows_written) == (2, 1, 1)
    raw = [_value(i, 0) for i in range(30, 36)]  # the six 10-minute values of hour 5
    with session_scope(engine) as session:
        (row,) = session.exec(select(Observation).where(Observation.metric == "drift.share_drifted",
                                                        Observation.time == hour)).all()
    assert row.samples == 8 and row.value_max == 1000.0
    assert row.value == pytest.approx((sum(raw) + 2000.0) / 8)  # not the mean of (old mean, 1000)


def test_observations_named_as_evidence_are_kept_with_their_ids(engine: Engine):
    model_id = _fill(engine)
    with session_scope(engine) as session:
        first = session.exec(select(Observation).where(Observation.metric == "drift.share_drifted")
                             .order_by(Observation.time).limit(3)).all()
        session.add(Symptom(model_id=model_id, kind="drift", opened_at=first[2].time, last_seen_at=first[2].time,
                            evidence={"opened_by": [{"observation_id": o.id, "value": o.value} for o in first[:2]]}))
        session.add(Decision(model_id=model_id, policy_name="p", action="retrain", status="proposed",
                             dedup_key="k", evidence={"context": {"observation_id": first[2].id}}))
        kept = {o.id: (o.time, o.value) for o in first}
    report = retention.thin(engine, at=AT, **KEEP)
    assert report.evidence_kept == 3
    with session_scope(engine) as session:
        rows = {o.id: (o.time, o.value) for o in session.exec(select(Observation).where(
            Observation.id.in_(list(kept))))}  # type: ignore[union-attr]
        (bucket,) = session.exec(select(Observation).where(Observation.metric == "drift.share_drifted",
                                                           Observation.time == T0,
                                                           Observation.samples.is_not(None))).all()  # type: ignore[union-attr]
    assert rows == kept
    assert bucket.samples == 3 and bucket.value == pytest.approx(sum(_value(i, 0) for i in (3, 4, 5)) / 3)


def test_old_tick_reports_are_emptied_and_nothing_else_is_deleted(engine: Engine):
    model_id = _fill(engine)
    with session_scope(engine) as session:
        for day in range(3):
            session.add(Tick(at=T0 + timedelta(days=day, hours=1), status="ok", summary={"big": ["x"] * 100}))
        session.add(Decision(model_id=model_id, policy_name="p", action="retrain", status="proposed",
                             dedup_key="old", created_at=T0))
        record(session, actor="t", kind="k", time=T0)
    report = retention.thin(engine, at=AT, **KEEP)
    assert report.tick_reports_pruned == 2
    with session_scope(engine) as session:
        ticks = session.exec(select(Tick).order_by(Tick.at)).all()
        assert [t.summary for t in ticks] == [retention.PRUNED_SUMMARY] * 2 + [{"big": ["x"] * 100}]
        assert session.exec(select(func.count()).select_from(Decision)).one() == 1
    assert retention.thin(engine, at=AT, **KEEP).tick_reports_pruned == 0


def test_a_dry_run_reports_the_pass_and_changes_nothing(engine: Engine):
    _fill(engine)
    before = _rows(engine)
    dry = retention.thin(engine, at=AT, dry_run=True, **KEEP)
    assert _rows(engine) == before and dry.dry_run
    real = retention.thin(engine, at=AT, **KEEP)
    assert (dry.raw_rows_replaced, dry.bucket_rows_written) == (real.raw_rows_replaced, real.bucket_rows_written) != (0, 0)


def test_the_dashboard_series_stays_continuous_across_the_cutoff(engine: Engine):
    model_id = _fill(engine)
    retention.thin(engine, at=AT, **KEEP)
    with session_scope(engine) as session:
        points = mt.downsampled(session, model_id, ["drift.share_drifted"], since=T0, until=AT, max_points=36)
    width = timedelta(seconds=mt.bucket_seconds(T0, AT, 36))  # about two hours: a bucket row and raw rows may meet
    assert [p.time for p in points] == [T0 + k * width for k in range(36)]  # no gap, before or after the cutoff
    assert sum(p.count for p in points) == sum(_value(i, 0) is not None for i in range(3 * 24 * 6))
    cross = next(p for p in points if p.time < T0 + timedelta(days=2) < p.time + width)
    def shown_at(i: int) -> datetime:  # where a raw value is after the pass: its hour before the cutoff, else itself
        t = T0 + timedelta(minutes=10 * i)
        return t.replace(minute=0) if t < T0 + timedelta(days=2) else t

    raw = [v for i in range(3 * 24 * 6) if cross.time <= shown_at(i) < cross.time + width
           and (v := _value(i, 0)) is not None]
    assert cross.mean == pytest.approx(sum(raw) / len(raw))  # the bucket row weighs as many values as it stands for


def test_a_pass_runs_once_per_period_and_again_at_once_after_running_out_of_budget(engine: Engine):
    _fill(engine)
    args = dict(every=timedelta(hours=1), claimed_by="c1", **KEEP)
    first = retention.run_if_due(engine, at=AT, **args)
    assert first is not None and first.raw_rows_replaced > 0
    assert retention.run_if_due(engine, at=AT + timedelta(minutes=30), **args) is None
    assert retention.run_if_due(engine, at=AT + timedelta(minutes=59), claimed_by="c2", every=timedelta(hours=1),
                                **KEEP) is None
    later = retention.run_if_due(engine, at=AT + timedelta(hours=1), **args)
    assert later is not None and later.raw_rows_replaced == 6 * 3  # one more hour of raw rows past the age
    with engine.connect() as conn:
        state = conn.execute(text("SELECT claimed_by, complete FROM retention_state")).one()
    assert tuple(state) == ("c1", True)

    with session_scope(engine) as session:  # a backlog that one budget does not finish
        queries.add_observations(session, [observation_row(time=T0 + timedelta(minutes=m), model_id=1, sensor="s",
                                                           metric="m", value=1.0) for m in range(0, 600, 5)])
    ticks = iter(range(1000))  # a clock that moves a second per reading: the budget of 1 s ends after batch 2
    slow = retention.thin(engine, at=AT + timedelta(hours=2), batch_rows=12, budget=timedelta(seconds=1),
                          monotonic=lambda: float(next(ticks)), **KEEP)
    assert not slow.complete and slow.batches == 2
    with engine.begin() as conn:  # the state says the last pass ran out: the next tick goes on
        conn.execute(text("UPDATE retention_state SET complete = :f"), {"f": False})
    rest = retention.run_if_due(engine, at=AT + timedelta(hours=1, minutes=1), **args)
    assert rest is not None and rest.complete


def test_bad_parameters_are_named():
    with pytest.raises(InvalidParameterError, match="'bucket' parameter of thin"):
        retention.thin(None, at=AT, raw_for=timedelta(days=1), bucket=timedelta(milliseconds=10))  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="'batch_rows' parameter of thin"):
        retention.thin(None, at=AT, raw_for=timedelta(days=1), bucket=timedelta(hours=1), batch_rows=0)  # type: ignore[arg-type]


def test_a_pass_vacuums_postgresql_itself_only_where_autovacuum_is_off(engine: Engine):
    """Deleted rows' space is reused only after a VACUUM; with autovacuum off the pass runs it (the soak found
    the PostgreSQL knowledge base growing by every pass's deletions on such a server)."""
    _fill(engine)
    if engine.dialect.name == "postgresql":  # another application's table in the same database
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE other_app (id integer)")
            conn.exec_driver_sql("INSERT INTO other_app VALUES (1), (2)")
            conn.exec_driver_sql("DELETE FROM other_app WHERE id = 1")
    report = retention.run_pass(engine, at=AT, claimed_by="c1", force=True, **KEEP)
    assert report is not None and report.raw_rows_replaced > 0
    if engine.dialect.name != "postgresql":
        assert not report.vacuumed  # SQLite reuses its free pages by itself
        return
    with engine.connect() as conn:
        autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar_one()
        vacuumed = dict(conn.execute(text("SELECT relname, last_vacuum FROM pg_stat_user_tables "
                                          "WHERE schemaname = current_schema()")).all())
        stored = conn.execute(text("SELECT report FROM retention_state")).scalar_one()
    vacuumed_at = vacuumed["observation"]
    assert report.vacuumed == (autovacuum == "off")
    assert (vacuumed_at is not None) == report.vacuumed  # a fresh database: only the pass can have vacuumed it
    assert (vacuumed["model_lease"] is not None) == report.vacuumed  # the engine's other tables too
    assert vacuumed["other_app"] is None  # never another application's
    assert (stored if isinstance(stored, dict) else json.loads(stored))["vacuumed"] == report.vacuumed
    # nothing to fold: no VACUUM either
    again = retention.run_pass(engine, at=AT, claimed_by="c1", force=True, **KEEP)
    assert again is not None and not again.changed and not again.vacuumed
