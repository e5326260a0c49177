"""The Policies page's reads: firings counted by policy, UTC day and status in SQL; versions; the policy trail."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from knowledge import audit, policy_history, policy_modes, queries, registry
from knowledge.database import session_scope
from knowledge.tables import Decision, PolicyVersion
from mape.errors import InvalidParameterError

T0 = datetime(2026, 1, 5, 23, 30, tzinfo=timezone.utc)


def _decision(model_id: int, policy: str, at: datetime | None, status: str, n: int) -> Decision:
    return Decision(created_at=at or T0, tick_at=at, model_id=model_id, policy_name=policy, action="retrain",
                    status=status, dedup_key=f"{policy}/{status}/{n}/{at}")


def test_firings_are_counted_by_policy_utc_day_and_status_within_the_range(engine):
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="m")
        assert model.id is not None
        rows = [("a", T0, "proposed"), ("a", T0 + timedelta(minutes=20), "suppressed"),  # 23:50, still the 5th
                ("a", T0 + timedelta(hours=1), "proposed"), ("a", T0 + timedelta(hours=1, minutes=5), "proposed"),
                ("b", T0, "dry_run"), ("a", T0 - timedelta(days=20), "proposed"),  # before the range
                ("a", None, "approved")]  # a person's request: no tick, not a firing
        session.add_all([_decision(model.id, p, at, s, i) for i, (p, at, s) in enumerate(rows)])
    with session_scope(engine) as session:
        found = policy_history.firing_by_day(session, since=T0 - timedelta(days=7), until=T0 + timedelta(days=1))
        only_b = policy_history.firing_by_day(session, since=T0 - timedelta(days=7), until=T0 + timedelta(days=1),
                                              policy="b")
    assert [(f.policy, f.day, f.status, f.decisions) for f in found] == [
        ("a", date(2026, 1, 5), "proposed", 1), ("a", date(2026, 1, 5), "suppressed", 1),
        ("a", date(2026, 1, 6), "proposed", 2), ("b", date(2026, 1, 5), "dry_run", 1)]
    assert found[2].last == T0 + timedelta(hours=1, minutes=5) and found[2].last.tzinfo is not None
    assert [(f.policy, f.decisions) for f in only_b] == [("b", 1)]


def test_a_range_longer_than_the_limit_is_refused_naming_it(engine):
    with session_scope(engine) as session, pytest.raises(InvalidParameterError, match="at most 90 days after since"):
        policy_history.firing_by_day(session, since=T0 - timedelta(days=91), until=T0)


def test_versions_newest_first_their_summaries_and_the_policy_events(engine):
    with session_scope(engine) as session:
        for i, text in enumerate(("one", "two", "three")):
            session.add(PolicyVersion(name="a", sha256=str(i) * 64, text=text, loaded_at=T0 + timedelta(hours=i)))
        session.add(PolicyVersion(name="b", sha256="f" * 64, text="b", loaded_at=T0))
        queries.record_policy_version(session, name="c", text="c text", source="policies/c.yaml")
        audit.record(session, actor="controller", kind="policy.refused", subject="policies/bad.yaml",
                     payload={"error": "spec.when: boom"})
        audit.record(session, actor="controller", kind="decision.approved", subject="decision 1")
        policy_modes.set_mode(session, "a", "off", actor="ada", reason="incident")
    with session_scope(engine) as session:
        texts = [v.text for v in policy_history.versions(session, "a")]
        two = [v.text for v in policy_history.versions(session, "a", limit=2)]
        summaries = policy_history.version_summaries(session)
        events = policy_history.policy_events(session, since=T0 - timedelta(days=3650))
        recent = policy_history.policy_events(session, since=T0 - timedelta(days=3650), limit=1)
    assert texts == ["three", "two", "one"] and two == ["three", "two"]
    assert (summaries["a"].versions, summaries["a"].newest) == (3, T0 + timedelta(hours=2))
    assert set(summaries) == {"a", "b", "c"}
    assert [e.kind for e in events] == ["policy.mode_changed", "policy.refused", "policy.loaded"]
    assert [e.kind for e in recent] == ["policy.mode_changed"]
