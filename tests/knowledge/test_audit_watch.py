"""The audit chain verified in bounded stretches: verify_chain's bounds, and ChainWatch's passes and anchor."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from knowledge import audit
from knowledge.database import session_scope
from tests.conftest import SteppingClock

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _events(engine: Engine, n: int, start: int = 0) -> None:
    with session_scope(engine) as session:
        for i in range(start, start + n):
            audit.record(session, actor="tester", kind="thing.happened", subject=f"item {i}", payload={"i": i},
                         time=T0 + timedelta(seconds=i))


def test_the_digest_is_json_dumps_of_the_sorted_fields_on_awkward_values():
    payload = {"ü": "naïve ☃", "nested": {"b": [1, 2.5, None, True], "a": "\"quoted\"\n"}, "big": 10**20, "x": 1e-7}
    time = datetime(2026, 3, 1, 12, 30, 1, 5, tzinfo=timezone.utc)
    body = json.dumps({"prev": audit.GENESIS, "time": time.isoformat(timespec="microseconds"), "actor": "Zoë",
                       "kind": "k", "subject": "s\u2028", "payload": payload},
                      sort_keys=True, default=str, separators=(",", ":"))
    assert audit._digest(audit.GENESIS, time, "Zoë", "k", "s\u2028", payload) == \
        hashlib.sha256(body.encode()).hexdigest()


def test_verify_chain_in_bounded_stretches_ends_where_the_whole_pass_ends(engine: Engine):
    _events(engine, 7)
    with session_scope(engine) as session:
        whole = audit.verify_chain(session)
        first = audit.verify_chain(session, limit=3)
        rest = audit.verify_chain(session, after=first.end, limit=10)
        middle = audit.verify_chain(session, after=first.end, until_id=first.end.id + 2)
        exactly = audit.verify_chain(session, limit=7)
    assert whole.ok and whole.events == 7 and whole.complete
    assert (first.ok, first.events, first.complete, first.end.events) == (True, 3, False, 3)
    assert (rest.ok, rest.events, rest.complete, rest.end) == (True, 4, True, whole.end)
    assert (middle.events, middle.end.events) == (2, 5)
    assert exactly.complete and exactly.end == whole.end  # a limit that reaches the last event is the whole chain


def test_a_stretch_starting_from_a_wrong_hash_fails_at_its_first_event(engine: Engine):
    _events(engine, 3)
    with session_scope(engine) as session:
        first = audit.verify_chain(session, limit=1)
        verdict = audit.verify_chain(session, after=audit.ChainPoint(first.end.id, "f" * 64, 1))
    assert not verdict.ok and verdict.first_bad_id == first.end.id + 1 and "prev_hash" in verdict.reason


def test_the_first_pass_goes_budget_events_a_call_then_only_new_events_are_verified(engine: Engine):
    _events(engine, 5)
    watch = audit.ChainWatch(budget=2, clock=SteppingClock(T0))
    with session_scope(engine) as session:
        verdicts = [watch.check(session) for _ in range(3)]
    assert [(v.ok, v.verified, v.total, v.full_at is None) for v in verdicts] == \
        [(True, 2, 5, True), (True, 4, 5, True), (True, 5, 5, False)]
    assert verdicts[-1].finished
    _events(engine, 3, start=5)
    with session_scope(engine) as session:
        later = [watch.check(session) for _ in range(2)]
    assert [(v.finished, v.verified, v.total, v.repass) for v in later] == [(False, 7, 8, None), (True, 8, 8, None)]


def test_an_event_edited_in_place_is_found_by_the_first_pass(engine: Engine):
    _events(engine, 5)
    with engine.begin() as conn:
        third = conn.execute(text("SELECT id FROM audit_event ORDER BY id LIMIT 1 OFFSET 2")).scalar_one()
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE id = :id"), {"id": third})
    with session_scope(engine) as session:
        verdict = audit.ChainWatch().check(session)
    assert not verdict.ok and verdict.first_bad_id == third and "altered" in verdict.reason


def test_a_rewritten_history_with_every_hash_recomputed_is_caught_by_the_remembered_anchor(engine: Engine):
    _events(engine, 4)
    watch = audit.ChainWatch()
    with session_scope(engine) as session:
        assert watch.check(session).finished
    _rewrite_everything(engine, actor="mallory")
    with session_scope(engine) as session:
        assert audit.verify_chain(session).ok  # the rows alone look intact
        verdict = watch.check(session)
    assert not verdict.ok and "hash changed since this dashboard verified it" in verdict.reason


def test_a_removed_event_is_caught_by_the_count_before_the_anchor(engine: Engine):
    _events(engine, 4)
    watch = audit.ChainWatch()
    with session_scope(engine) as session:
        assert watch.check(session).finished
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE id = (SELECT min(id) FROM audit_event)"))
    with session_scope(engine) as session:
        verdict = watch.check(session)
    assert not verdict.ok and "3 events now precede it and 4 did" in verdict.reason


def test_an_old_event_edited_after_the_first_pass_is_found_by_the_next_full_pass(engine: Engine):
    _events(engine, 6)
    clock = SteppingClock(T0)
    watch = audit.ChainWatch(budget=4, full_every=timedelta(minutes=10), clock=clock)
    with session_scope(engine) as session:
        watch.check(session), watch.check(session)
        assert watch.check(session).finished
    with engine.begin() as conn:  # the content only: the anchor's hash is untouched
        conn.execute(text("UPDATE audit_event SET subject = 'edited' WHERE id = (SELECT min(id) FROM audit_event)"))
    with session_scope(engine) as session:
        assert watch.check(session).ok  # not due yet: what is verified is said on the page
        clock.advance(timedelta(minutes=10))
        verdict = watch.check(session)
    assert not verdict.ok and "altered" in verdict.reason


def test_a_full_pass_asked_for_restarts_from_the_first_event_and_keeps_the_anchor(engine: Engine):
    _events(engine, 6)
    clock = SteppingClock(T0)
    watch = audit.ChainWatch(budget=4, clock=clock)
    with session_scope(engine) as session:
        watch.check(session), watch.check(session)
        clock.advance(timedelta(minutes=1))
        watch.restart()
        during = watch.check(session)
        after = watch.check(session)
    assert during.finished and during.repass == 4 and during.full_at == T0
    assert after.repass is None and after.full_at == T0 + timedelta(minutes=1)


def test_a_budget_below_one_is_refused():
    with pytest.raises(ValueError, match="The 'budget' parameter of ChainWatch must be a positive int. Got 0"):
        audit.ChainWatch(budget=0)


def _rewrite_everything(engine: Engine, *, actor: str) -> None:
    """What someone with write access could do: change every event's actor and recompute the whole chain."""
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT id FROM audit_event ORDER BY id")).scalars().all()
    with session_scope(engine) as session:
        prev = audit.GENESIS
        for event_id in rows:
            event = session.get(audit.AuditEvent, event_id)
            event.actor, event.prev_hash = actor, f"tmp{event_id}"
            session.flush()
        for event_id in rows:
            event = session.get(audit.AuditEvent, event_id)
            event.prev_hash = prev
            event.hash = audit._digest(prev, event.time, actor, event.kind, event.subject, event.payload)
            session.flush()
            prev = event.hash
