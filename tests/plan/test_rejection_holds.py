"""A person's "no" holds: a rejected decision keeps its policy from asking again for the model until the cooldown."""

from __future__ import annotations

from datetime import timedelta

from knowledge.database import session_scope
from mape.access import Identity, Role, reject
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy

ANN = Identity(name="ann", role=Role.approver, via="password")


def test_a_rejected_decision_holds_its_policy_for_the_cooldown_counted_from_the_answer(engine, clock):
    planner = Planner([make_policy("careful", approval="required", approval_timeout="1d", cooldown="6h")])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        (first,) = planner.plan(session, [model], t0).decisions["m"]
        assert first.status == "awaiting_approval"
        answered = t0 + timedelta(hours=2)
        reject(session, first.id, ANN, at=answered, comment="the data is from the outage")

        (held,) = planner.plan(session, [model], answered + timedelta(minutes=1)).decisions["m"]
        assert held.status == "suppressed"
        assert held.reason == (f"cooldown: decision {first.id} was rejected by ann at {answered.isoformat()}; "
                               "asked again after the cooldown 6h")
        # 6 h after the question but only 4 h after the answer: still held
        (still,) = planner.plan(session, [model], t0 + timedelta(hours=6, minutes=30)).decisions["m"]
        assert still.status == "suppressed" and "was rejected by ann" in still.reason
        (again,) = planner.plan(session, [model], answered + timedelta(hours=6)).decisions["m"]
        assert again.status == "awaiting_approval"


def test_a_rejection_holds_only_the_model_it_was_about(engine, clock):
    planner = Planner([make_policy("careful", approval="required", approval_timeout="1d", cooldown="6h")])
    t0 = clock()
    with session_scope(engine) as session:
        m, n = add_model(session, "m"), add_model(session, "n")
        asked = planner.plan(session, [m, n], t0).decisions
        reject(session, asked["m"][0].id, ANN, at=t0 + timedelta(hours=4), comment="no")
        later = planner.plan(session, [m, n], t0 + timedelta(hours=6, minutes=30)).decisions
        assert later["m"][0].status == "suppressed" and "was rejected by ann" in later["m"][0].reason
        assert later["n"][0].status == "awaiting_approval"  # n's question still waits; its cooldown has passed


def test_without_a_cooldown_a_rejected_policy_asks_again_at_its_next_firing(engine, clock):
    planner = Planner([make_policy("eager", approval="required", approval_timeout="1d", cooldown="0s")])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        (first,) = planner.plan(session, [model], t0).decisions["m"]
        reject(session, first.id, ANN, at=t0 + timedelta(minutes=1), comment="no")
        (again,) = planner.plan(session, [model], t0 + timedelta(minutes=2)).decisions["m"]
        assert again.status == "awaiting_approval"
