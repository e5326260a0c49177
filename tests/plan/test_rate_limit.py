"""``spec.rate_limit``: at most ``max`` acting decisions of a policy per model within ``per``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from knowledge import queries
from knowledge.database import session_scope
from mape.errors import PolicyError
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy

HOUR = timedelta(hours=1)


def test_the_decision_beyond_the_limit_is_suppressed_and_allowed_again_once_the_window_has_passed(engine, clock):
    planner = Planner([make_policy("p", action="retrain", cooldown=0, rate_limit={"max": 2, "per": "1d"})])
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        first, second, third = (planner.plan(session, [model], t0 + i * HOUR).decisions["m"][0] for i in range(3))
        last_inside = planner.plan(session, [model], t0 + timedelta(hours=23, minutes=59)).decisions["m"][0]
        # the first decision (t0) leaves the window exactly 1d later; the second (t0+1h) is still in it
        after = planner.plan(session, [model], t0 + timedelta(days=1)).decisions["m"][0]
        full_again = planner.plan(session, [model], t0 + timedelta(days=1, minutes=30)).decisions["m"][0]
    assert [d.status for d in (first, second)] == ["proposed", "proposed"]
    assert third.status == last_inside.status == "suppressed"
    assert third.reason == "rate limit: 2 retrain decisions in the last 1d"
    assert after.status == "proposed"
    assert full_again.status == "suppressed"  # t0+1h and t0+1d are both within the last day


def test_the_rate_limit_counts_only_this_policys_acting_decisions(engine, clock):
    limited = make_policy("limited", action="retrain", priority=90, cooldown=0, rate_limit={"max": 1, "per": "6h"})
    other = make_policy("other", action="retrain", priority=10, cooldown=0)
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        elsewhere = add_model(session, "n")
        planner = Planner([limited, other])
        first = planner.plan(session, [model, elsewhere], t0)
        second = planner.plan(session, [model, elsewhere], t0 + HOUR)
    assert [(d.policy_name, d.status) for d in first.decisions["m"]] == [("limited", "proposed"),
                                                                         ("other", "suppressed")]
    # an hour later: `limited` hits its limit, which leaves the model's slot to `other`
    assert [(d.policy_name, d.status, d.reason.split(":")[0]) for d in second.decisions["m"]] == [
        ("limited", "suppressed", "rate limit"), ("other", "proposed", "")]
    # the limit is per model: model n has its own count
    assert [d.status for d in second.decisions["n"]] == ["suppressed", "proposed"]
    assert [d.status for d in first.decisions["n"]] == ["proposed", "suppressed"]


def test_suppressed_decisions_do_not_count_toward_the_rate_limit(engine, clock):
    policy = make_policy("p", action="retrain", cooldown="2h", rate_limit={"max": 2, "per": "1d"})
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        planner = Planner([policy])
        statuses = [planner.plan(session, [model], t0 + i * HOUR).decisions["m"][0].status for i in range(6)]
        assert queries.count_acting_decisions(session, model.id, "p", since=t0 - HOUR, until=t0 + 6 * HOUR) == 2
    # t0 proposed, t1 cooldown, t2 proposed, t3 cooldown, t4 rate limit (2 in the window), t5 rate limit
    assert statuses == ["proposed", "suppressed", "proposed", "suppressed", "suppressed", "suppressed"]


def test_a_dry_run_policy_is_never_rate_limited(engine, clock):
    planner = Planner([make_policy("p", mode="dry-run", cooldown=0, rate_limit={"max": 1, "per": "1d"})])
    with session_scope(engine) as session:
        model = add_model(session)
        statuses = [planner.plan(session, [model], clock.advance(HOUR)).decisions["m"][0].status for _ in range(3)]
    assert statuses == ["dry_run"] * 3


@pytest.mark.parametrize(("rate_limit", "where", "message"), [
    ({"max": 0, "per": "1h"}, "spec.rate_limit.max", "greater than or equal to 1"),
    ({"max": 2, "per": 0}, "spec.rate_limit.per", "longer than 0"),
    ({"max": 2}, "spec.rate_limit.per", "required"),
    ({"max": 2, "per": "1h", "burst": 3}, "spec.rate_limit.burst", "unknown field"),
])
def test_a_bad_rate_limit_is_refused_naming_the_field(rate_limit, where, message):
    with pytest.raises(PolicyError) as caught:
        make_policy("p", rate_limit=rate_limit)
    assert where in str(caught.value) and message in str(caught.value)
