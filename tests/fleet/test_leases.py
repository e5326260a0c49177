"""The lease protocol (knowledge.leases) on both backends: fair shares, renewal, takeover after expiry, fencing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from knowledge import leases
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import AuditEvent, ManagedModel, ModelLease

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
D = timedelta(seconds=15)


@pytest.fixture
def fleet(db_url):
    upgrade(db_url)
    engine = create_engine_for(db_url)
    with session_scope(engine) as session:
        for i in range(10):
            session.add(ManagedModel(name=f"m{i}", owner="o", training_entrypoint="a.b:c"))
    with session_scope(engine) as session:
        ids = sorted(m.id for m in session.exec(select(ManagedModel)))
    yield engine, ids
    engine.dispose()


def _holders(engine, now):
    with session_scope(engine) as session:
        return {row.model_id: row.holder for row in leases.leases(session)
                if row.holder and row.expires_at > now}


def test_a_lone_controller_holds_the_whole_fleet_and_renews_it(fleet):
    engine, ids = fleet
    first = leases.balance(engine, "a", ids, now=T0, duration=D)
    assert first.held == frozenset(ids) and first.share == 10 and first.members == ["a"]
    assert set(first.acquired) == set(ids) and set(first.acquired.values()) == {""}
    again = leases.balance(engine, "a", ids, now=T0 + timedelta(seconds=10), duration=D)
    assert again.held == frozenset(ids) and again.renewed == 10 and not again.changed
    with session_scope(engine) as session:
        assert leases.held(session, "a", T0 + timedelta(seconds=24)) == frozenset(ids)  # renewed at +10 s for 15 s
        assert leases.held(session, "a", T0 + timedelta(seconds=25)) == frozenset()
        assert {row.epoch for row in leases.leases(session)} == {1}  # renewal keeps the epoch
        assert [e.kind for e in session.exec(select(AuditEvent))].count("lease.changed") == 1  # only the change


def test_a_second_controller_gets_its_share_as_the_first_releases_its_surplus(fleet):
    engine, ids = fleet
    leases.balance(engine, "a", ids, now=T0, duration=D)
    joined = leases.balance(engine, "b", ids, now=T0 + timedelta(seconds=1), duration=D)
    assert joined.share == 5 and joined.held == frozenset()  # nothing is free yet
    shed = leases.balance(engine, "a", ids, now=T0 + timedelta(seconds=2), duration=D, busy=[ids[0]])
    assert len(shed.released) == 5 and ids[0] not in shed.released  # a model with an action in flight is kept
    took = leases.balance(engine, "b", ids, now=T0 + timedelta(seconds=3), duration=D)
    assert took.held == frozenset(shed.released) and set(took.acquired.values()) == {""}
    holders = _holders(engine, T0 + timedelta(seconds=3))
    assert sorted(holders) == ids and sorted(holders.values()).count("a") == 5


def test_a_dead_controllers_models_are_taken_once_its_leases_expire_with_a_new_epoch(fleet):
    engine, ids = fleet
    leases.balance(engine, "a", ids, now=T0, duration=D)
    leases.balance(engine, "b", ids, now=T0, duration=D)
    leases.balance(engine, "a", ids, now=T0 + timedelta(seconds=1), duration=D)
    leases.balance(engine, "b", ids, now=T0 + timedelta(seconds=1), duration=D)
    holders = _holders(engine, T0 + timedelta(seconds=1))
    a_models = sorted(m for m, h in holders.items() if h == "a")
    assert len(a_models) == 5
    # "a" dies: "b" renews alone; before a's leases (from +1 s, 15 s) expire it takes nothing of a's
    early = leases.balance(engine, "b", ids, now=T0 + timedelta(seconds=11), duration=D)
    assert early.held.isdisjoint(a_models)
    late = leases.balance(engine, "b", ids, now=T0 + timedelta(seconds=17), duration=D)
    assert late.members == ["b"] and late.share == 10 and late.held == frozenset(ids)
    assert {late.acquired[m] for m in a_models} == {"a"}  # taken over from "a"
    with session_scope(engine) as session:
        epochs = {row.model_id: row.epoch for row in leases.leases(session)}
        events = [e.payload for e in session.exec(select(AuditEvent).where(AuditEvent.kind == "lease.changed"))]
    assert {epochs[m] for m in a_models} == {2}
    assert any(set(p["acquired"].values()) == {"a"} for p in events)


def test_two_controllers_never_hold_one_model(fleet):
    engine, ids = fleet
    now = T0
    for step in range(12):  # joins, a death and a return, interleaved
        now += timedelta(seconds=5)
        for name in (["a", "b", "c"] if step < 4 or step > 8 else ["a", "c"]):
            leases.balance(engine, name, ids, now=now, duration=D)
        with session_scope(engine) as session:
            valid = [row for row in leases.leases(session) if row.holder and row.expires_at > now]
        assert len({row.model_id for row in valid}) == len(valid)  # one holder per model, by construction (PK)
        counts = {name: sum(1 for row in valid if row.holder == name) for name in "abc"}
        assert max(counts.values()) <= 10
    assert sorted(_holders(engine, now)) == ids and set(_holders(engine, now).values()) == {"a", "b", "c"}


def test_leaving_hands_the_leases_back_at_once(fleet):
    engine, ids = fleet
    leases.balance(engine, "a", ids, now=T0, duration=D)
    leases.balance(engine, "b", ids, now=T0, duration=D)
    assert sorted(leases.leave(engine, "a", now=T0 + timedelta(seconds=1))) == ids
    with session_scope(engine) as session:
        assert leases.members(session, T0 + timedelta(seconds=1)) == ["b"]
    took = leases.balance(engine, "b", ids, now=T0 + timedelta(seconds=2), duration=D)
    assert took.held == frozenset(ids)


def test_the_fence_condition_holds_only_for_the_holder_while_the_lease_lasts(fleet):
    engine, ids = fleet
    leases.balance(engine, "a", ids[:1], now=T0, duration=D)
    with session_scope(engine) as session:
        def holds(who, at):
            return session.exec(select(ModelLease.model_id).where(
                leases.holds_clause(ModelLease.model_id, who, at))).all()
        assert holds("a", T0 + timedelta(seconds=14)) == [ids[0]]
        assert holds("b", T0 + timedelta(seconds=14)) == []
        assert holds("a", T0 + timedelta(seconds=15)) == []
