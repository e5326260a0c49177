"""``spec.never_with`` (hard exclusions) and the fleet-wide blast radius (``plan.blast_radius``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision
from mape.config import BlastRadius, Settings
from mape.plan import Planner
from mape.plan.rules import blast_limit
from tests.plan.helpers import add_model, make_policy

HOUR = timedelta(hours=1)


def test_a_retrain_is_excluded_for_the_window_after_a_rollback_and_allowed_after_it(engine, clock):
    rollback = make_policy("roll", action="rollback", cooldown=0)
    retrain = make_policy("retrain", action="retrain", cooldown=0, never_with=[{"action": "rollback", "within": "1d"}])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        planner = Planner([rollback, retrain])
        first = planner.plan(session, [model], t0).decisions["m"]
        quiet = Planner([retrain])  # from now on only the retrain policy fires
        inside = quiet.plan(session, [model], t0 + 23 * HOUR).decisions["m"]
        after = quiet.plan(session, [model], t0 + 24 * HOUR).decisions["m"]
    assert [(d.policy_name, d.status) for d in first] == [("roll", "proposed"), ("retrain", "suppressed")]
    assert first[1].reason.startswith("excluded: never with rollback within 1d; rollback decision")
    assert first[1].reason.endswith("in this tick")
    (held,) = inside
    assert held.status == "suppressed"
    assert held.reason == (f"excluded: never with rollback within 1d; rollback decision {first[0].id} at "
                           f"{t0.isoformat()}")
    assert [d.status for d in after] == ["proposed"]


def test_an_exclusion_with_no_window_holds_only_in_the_same_tick(engine, clock):
    rollback = make_policy("roll", action="rollback", cooldown=0, priority=10)
    retrain = make_policy("retrain", action="retrain", cooldown=0, priority=90, never_with=[{"action": "rollback"}])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        first = Planner([rollback]).plan(session, [model], t0).decisions["m"]
        later = Planner([retrain]).plan(session, [model], t0 + timedelta(minutes=5)).decisions["m"]
    assert [d.status for d in first] == ["proposed"]
    assert [d.status for d in later] == ["proposed"]


def test_an_exclusion_is_validated_like_the_rest_of_the_file():
    with pytest.raises(Exception) as info:
        make_policy("bad", never_with=[{"action": "Roll Back"}])
    assert "spec.never_with" in str(info.value)


def _fleet(session, n: int):  # type: ignore[no-untyped-def]
    return [add_model(session, f"m{i:02d}") for i in range(n)]


def test_past_the_blast_radius_decisions_wait_for_a_person_and_the_trail_says_so(engine, clock):
    policy = make_policy("p", action="retrain", cooldown=0)
    blast = BlastRadius(max_models=3, per="1h")
    t0 = clock()
    with session_scope(engine) as session:
        fleet = _fleet(session, 5)
        report = Planner([policy], blast_radius=blast).plan(session, fleet, t0)
        statuses = [report.decisions[m.name][0].status for m in fleet]
        held = report.decisions["m04"][0]
        events = list(session.exec(select(AuditEvent).where(AuditEvent.kind == "plan.blast_radius")))
    assert statuses == ["proposed"] * 3 + ["awaiting_approval"] * 2
    assert held.reason == "blast radius: 3 of 5 models acted on in the last 1h (limit 3); a person must approve"
    assert held.expires_at is not None
    (event,) = events
    assert event.payload["limit"] == 3 and len(event.payload["held"]) == 2


def test_the_blast_radius_window_slides_and_a_model_already_acted_on_does_not_count_twice(engine, clock):
    policy = make_policy("p", action="retrain", cooldown=0)
    blast = BlastRadius(max_models=2, per="1h")
    t0 = clock()
    with session_scope(engine) as session:
        fleet = _fleet(session, 3)
        planner = Planner([policy], blast_radius=blast)
        first = planner.plan(session, fleet, t0)
        again = planner.plan(session, fleet, t0 + timedelta(minutes=30))
        later = planner.plan(session, fleet, t0 + timedelta(minutes=61))
    assert [first.decisions[m.name][0].status for m in fleet] == ["proposed", "proposed", "awaiting_approval"]
    # m00 and m01 were acted on within the hour: they may act again; m02 would be a third model
    assert [again.decisions[m.name][0].status for m in fleet] == ["proposed", "proposed", "awaiting_approval"]
    # t0's decisions left the window; the t0+30m ones (m00, m01) are still in it
    assert [later.decisions[m.name][0].status for m in fleet] == ["proposed", "proposed", "awaiting_approval"]


def test_decisions_that_wait_for_a_person_do_not_use_up_the_blast_radius(engine, clock):
    gated = make_policy("gated", action="retrain", cooldown=0, approval="required",
                        selector={"models": ["m00", "m01"]})
    auto = make_policy("auto", action="retrain", cooldown=0, selector={"models": ["m02", "m03"]})
    t0 = clock()
    with session_scope(engine) as session:
        fleet = _fleet(session, 4)
        report = Planner([gated, auto], blast_radius=BlastRadius(max_models=2, per="1h")).plan(session, fleet, t0)
    assert [report.decisions[m.name][0].status for m in fleet] == ["awaiting_approval", "awaiting_approval",
                                                                  "proposed", "proposed"]


def test_the_blast_radius_in_percent_rounds_down_but_allows_one_model():
    assert blast_limit(BlastRadius(max_percent=5), 1000) == 50
    assert blast_limit(BlastRadius(max_percent=5), 10) == 1
    assert blast_limit(BlastRadius(max_percent=50, max_models=3), 100) == 3


def test_the_blast_radius_setting_is_checked_and_reaches_the_planner(tmp_path):
    with pytest.raises(ValidationError, match="set max_models, max_percent or both"):
        BlastRadius(per="1h")
    with pytest.raises(ValidationError):
        BlastRadius(max_percent=150)
    settings = Settings(plan={"blast_radius": {"max_percent": 10, "per": "30m"}})
    assert settings.plan.blast_radius == BlastRadius(max_percent=10, per=timedelta(minutes=30))


def test_dry_run_and_suppressed_decisions_count_for_nothing(engine, clock):
    watching = make_policy("watch", action="retrain", cooldown=0, mode="dry-run")
    t0 = clock()
    with session_scope(engine) as session:
        fleet = _fleet(session, 3)
        planner = Planner([watching], blast_radius=BlastRadius(max_models=1, per="1h"))
        report = planner.plan(session, fleet, t0)
        stored = list(session.exec(select(Decision)))
    assert {d.status for d in report.all_decisions} == {"dry_run"}
    assert len(stored) == 3
