"""At most one acting decision per model and tick: busy models, cooldowns and rank suppress the rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import func, select

from knowledge.database import session_scope
from knowledge.tables import Decision
from mape.errors import PolicyError
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy, observe, running_action


def _count(session) -> int:
    return session.exec(select(func.count()).select_from(Decision)).one()


def test_a_busy_model_gets_suppressed_decisions_naming_the_run(engine, clock):
    policy = make_policy("retrain-always", action="retrain")
    with session_scope(engine) as session:
        model = add_model(session)
        run = running_action(session, model, clock(), state="running")
        report = Planner([policy]).plan(session, [model], clock.advance(timedelta(minutes=5)))
    (decision,) = report.decisions["m"]
    assert decision.status == "suppressed"
    assert decision.reason.startswith("busy:")
    assert f"action run {run.id} (retrain, running)" in decision.reason
    assert report.acting() == []


def test_a_finished_run_does_not_make_the_model_busy(engine, clock):
    policy = make_policy("retrain-always", action="retrain", cooldown=0)
    with session_scope(engine) as session:
        model = add_model(session)
        running_action(session, model, clock(), state="succeeded")
        report = Planner([policy]).plan(session, [model], clock.advance(timedelta(minutes=5)))
    assert [d.status for d in report.decisions["m"]] == ["proposed"]


def test_cooldown_suppresses_until_it_has_passed(engine, clock):
    planner = Planner([make_policy("retrain-always", action="retrain", cooldown="6h")])
    first_at = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        first = planner.plan(session, [model], first_at).decisions["m"][0]
        inside = planner.plan(session, [model], clock.advance(timedelta(hours=5, minutes=59))).decisions["m"][0]
        after = planner.plan(session, [model], clock.advance(timedelta(minutes=1))).decisions["m"][0]

    assert first.status == "proposed"
    assert inside.status == "suppressed"
    assert inside.reason == f"cooldown: last retrain decision {first.id} at {first_at.isoformat()}, cooldown 6h"
    assert after.status == "proposed"  # exactly 6h after the last acting decision


def test_suppressed_and_dry_run_decisions_do_not_restart_the_cooldown(engine, clock):
    planner = Planner([make_policy("retrain-always", action="retrain", cooldown="1h"),
                       make_policy("retrain-watch", action="retrain", mode="dry-run", cooldown="1h")])
    with session_scope(engine) as session:
        model = add_model(session)
        planner.plan(session, [model], clock())
        planner.plan(session, [model], clock.advance(timedelta(minutes=30)))  # suppressed + dry-run
        later = planner.plan(session, [model], clock.advance(timedelta(minutes=30))).decisions["m"]
    assert [(d.policy_name, d.status) for d in later] == [("retrain-always", "proposed"),
                                                          ("retrain-watch", "dry_run")]


def test_cooldown_is_per_action_type(engine, clock):
    retrain = make_policy("retrain-always", action="retrain", cooldown="6h", priority=10)
    with session_scope(engine) as session:
        model = add_model(session)
        Planner([retrain]).plan(session, [model], clock())
        rollback = make_policy("rollback-now", action="rollback", cooldown="6h")
        report = Planner([retrain, rollback]).plan(session, [model], clock.advance(timedelta(hours=1)))
    statuses = {d.policy_name: (d.status, d.reason.split(":")[0]) for d in report.decisions["m"]}
    assert statuses == {"retrain-always": ("suppressed", "cooldown"), "rollback-now": ("proposed", "")}


def test_two_firing_policies_give_one_proposed_and_one_suppressed_naming_the_winner(engine, clock):
    high = make_policy("rollback-fast", action="rollback", priority=90)
    low = make_policy("retrain-slow", action="retrain", priority=50)
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([low, high]).plan(session, [model], clock())
    winner, loser = report.decisions["m"]
    assert (winner.policy_name, winner.status) == ("rollback-fast", "proposed")
    assert (loser.policy_name, loser.status) == ("retrain-slow", "suppressed")
    assert loser.reason == (f"outranked: policy rollback-fast (rollback, decision {winner.id}) "
                            "acts on model m in this tick")


def test_higher_priority_wins_even_over_a_safer_action(engine, clock):
    retrain = make_policy("retrain-urgent", action="retrain", priority=100)
    rollback = make_policy("rollback-maybe", action="rollback", priority=10)
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([rollback, retrain]).plan(session, [model], clock())
    assert [(d.policy_name, d.status) for d in report.decisions["m"]] == [
        ("retrain-urgent", "proposed"), ("rollback-maybe", "suppressed")]


def test_rollback_beats_retrain_at_equal_priority(engine, clock):
    retrain = make_policy("a-retrain", action="retrain", priority=50)
    rollback = make_policy("z-rollback", action="rollback", priority=50)
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([retrain, rollback]).plan(session, [model], clock())
    assert [(d.policy_name, d.status) for d in report.decisions["m"]] == [
        ("z-rollback", "proposed"), ("a-retrain", "suppressed")]


def test_unknown_action_types_rank_after_known_ones_then_by_name():
    actions = frozenset({"retrain", "rescale"})
    planner = Planner([make_policy("b-rescale", action="rescale", known_actions=actions),
                       make_policy("a-rescale", action="rescale", known_actions=actions),
                       make_policy("c-retrain", action="retrain", known_actions=actions)])
    assert [p.name for p in sorted(planner.policies, key=planner.rank)] == ["c-retrain", "a-rescale", "b-rescale"]


def test_an_awaiting_approval_decision_also_takes_the_ticks_one_acting_slot(engine, clock):
    careful = make_policy("careful", action="rollback", priority=90, approval="required")
    eager = make_policy("eager", action="retrain", priority=10)
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([careful, eager]).plan(session, [model], clock())
    assert [d.status for d in report.decisions["m"]] == ["awaiting_approval", "suppressed"]


def test_planning_the_same_tick_again_adds_no_rows(engine, clock):
    planner = Planner([make_policy("rollback-fast", action="rollback", priority=90),
                       make_policy("retrain-slow", action="retrain", priority=50),
                       make_policy("watch", mode="dry-run")])
    at = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        first = planner.plan(session, [model], at)
        rows = _count(session)
    with session_scope(engine) as session:
        again = planner.plan(session, [model], at)
        assert _count(session) == rows == 3
    assert first.created == 3 and again.created == 0
    assert [(d.id, d.status) for d in again.decisions["m"]] == [(d.id, d.status) for d in first.decisions["m"]]


def test_a_repeated_tick_never_adds_a_second_acting_decision(engine, clock):
    at = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        Planner([make_policy("rollback-fast", action="rollback", priority=90)]).plan(session, [model], at)
        # the tick is replayed with a policy library that now also has a retrain policy
        replay = Planner([make_policy("retrain-new", action="retrain", cooldown=0)]).plan(session, [model], at)
    (decision,) = replay.decisions["m"]
    assert decision.status == "suppressed" and "outranked: policy rollback-fast" in decision.reason


def test_a_condition_on_a_missing_signal_does_not_fire_and_is_reported(engine, clock):
    needs_accuracy = make_policy("needs-accuracy", when="performance.accuracy < 0.8")
    with session_scope(engine) as session:
        model = add_model(session)
        observe(session, model, clock(), drift__share_drifted=0.5)  # but no performance signal
        report = Planner([needs_accuracy]).plan(session, [model], clock())
        assert _count(session) == 0
    assert report.decisions["m"] == []
    (error,) = report.errors
    assert (error.policy, error.model, error.field, error.missing) == ("needs-accuracy", "m", "spec.when", True)
    assert "accuracy" in error.message
    assert str(error).endswith("; not firing")


def test_a_type_error_in_one_policy_does_not_stop_the_others(engine, clock):
    broken = make_policy("broken", when="model.name > 3", priority=100)
    fine = make_policy("fine", when="model.name == 'm'")
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([broken, fine]).plan(session, [model], clock())
    assert [(d.policy_name, d.status) for d in report.decisions["m"]] == [("fine", "proposed")]
    assert [(e.policy, e.missing) for e in report.errors] == [("broken", False)]


def test_an_unless_that_cannot_be_evaluated_holds_the_policy_back(engine, clock):
    guarded = make_policy("guarded", when="true", unless="performance.accuracy < 0.5")
    with session_scope(engine) as session:
        model = add_model(session)
        report = Planner([guarded]).plan(session, [model], clock())
    assert report.decisions["m"] == []
    assert [(e.policy, e.field) for e in report.errors] == [("guarded", "spec.unless")]


def test_two_policies_with_one_name_are_refused_at_construction():
    with pytest.raises(PolicyError, match="duplicate policy name 'same'"):
        Planner([make_policy("same"), make_policy("same", action="rollback")])
