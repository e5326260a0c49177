"""A mode an admin set in the knowledge base overrides the file's: off holds a policy back, dry-run only records it."""

from __future__ import annotations

from datetime import timedelta

from knowledge import policy_modes
from knowledge.database import session_scope
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy

HOUR = timedelta(hours=1)


def test_off_and_dry_run_overrides_change_what_the_planner_does_and_clearing_restores_the_file(engine, clock):
    planner = Planner([make_policy("retrain-now", cooldown=0)])
    with session_scope(engine) as session:
        model = add_model(session)
        (acting,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
        policy_modes.set_mode(session, "retrain-now", "off", actor="ada", reason="incident 42", at=clock())
        off = planner.plan(session, [model], clock.advance(HOUR)).decisions.get("m", [])
        set_at = clock()
        policy_modes.set_mode(session, "retrain-now", "dry-run", actor="ada", reason="watching it", at=set_at)
        (dry,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
        policy_modes.clear_mode(session, "retrain-now", actor="ada", reason="fixed", at=clock())
        (back,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
    assert (acting.policy_name, acting.status) == ("retrain-now", "proposed")
    assert off == [], "an off policy is not evaluated at all"
    assert (dry.policy_name, dry.status) == ("retrain-now", "dry_run")
    assert dry.reason == (f"dry-run: recorded, not acted on (mode set to dry-run by ada at {set_at.isoformat()}: "
                          "watching it)")
    assert dry.evidence["mode"] == "dry-run"
    assert dry.evidence["mode_override"] == {"mode": "dry-run", "set_by": "ada", "set_at": set_at.isoformat(),
                                             "reason": "watching it"}
    assert (back.status, back.evidence["mode"]) == ("proposed", "enforce")
    assert "mode_override" not in back.evidence
    assert dry.policy_sha256 == back.policy_sha256, "decisions still name the file's version"


def test_an_override_can_switch_on_a_policy_whose_file_says_off(engine, clock):
    planner = Planner([make_policy("quiet", mode="off", cooldown=0)])
    with session_scope(engine) as session:
        model = add_model(session)
        assert planner.plan(session, [model], clock.advance(HOUR)).decisions.get("m", []) == []
        policy_modes.set_mode(session, "quiet", "enforce", actor="ada", reason="try it", at=clock())
        (decision,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
    assert (decision.status, decision.evidence["mode_override"]["mode"]) == ("proposed", "enforce")


def test_an_override_of_a_policy_not_in_the_set_changes_nothing(engine, clock):
    planner = Planner([make_policy("p", cooldown=0)])
    with session_scope(engine) as session:
        model = add_model(session)
        policy_modes.set_mode(session, "elsewhere", "off", actor="ada", reason="not ours", at=clock())
        (decision,) = planner.plan(session, [model], clock.advance(HOUR)).decisions["m"]
    assert decision.status == "proposed" and "mode_override" not in decision.evidence
