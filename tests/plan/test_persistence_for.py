"""``spec.for`` and ``spec.keep_firing_for``: pending, firing and kept firing, with state in the knowledge base."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from knowledge.database import session_scope
from knowledge.tables import Decision, PolicyState
from mape.errors import PolicyError
from mape.plan import Planner
from tests.plan.helpers import add_model, make_policy, observe

DRIFTED = "drift.share_drifted > 0.3"
HOUR = timedelta(hours=1)


def _statuses(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.status for d in report.decisions["m"]]


def _tick(engine, planner, at, share: float | None):  # type: ignore[no-untyped-def]
    """Observe drift ``share`` at ``at`` (None: no observation) and plan that tick in its own session."""
    with session_scope(engine) as session:
        model = add_model(session)
        if share is not None:
            observe(session, model, at, drift__share_drifted=share)
        return planner.plan(session, [model], at)


def _state(engine, policy: str = "p") -> PolicyState | None:
    with session_scope(engine) as session:
        return session.exec(select(PolicyState).where(PolicyState.policy_name == policy)).first()


def test_a_policy_with_for_is_pending_until_the_condition_has_held_that_long_then_fires(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, **{"for": "2h"})])
    t0 = clock()
    first = _tick(engine, planner, t0, 0.5)
    second = _tick(engine, planner, t0 + HOUR, 0.5)
    almost = _tick(engine, planner, t0 + timedelta(hours=1, minutes=59), 0.5)
    fired = _tick(engine, planner, t0 + 2 * HOUR, 0.5)
    again = _tick(engine, planner, t0 + 3 * HOUR, 0.5)

    for report in (first, second, almost):
        assert _statuses(report) == []
        assert report.pending == {"m": ["p"]}
    assert _statuses(fired) == ["proposed"] and fired.pending == {}
    assert _statuses(again) == ["proposed"]  # still firing; cooldown 0
    (decision,) = fired.decisions["m"]
    assert decision.evidence["firing"] == {
        "for": "2h", "keep_firing_for": "0s", "pending_since": t0.isoformat(),
        "firing_since": (t0 + 2 * HOUR).isoformat(), "last_true_at": (t0 + 2 * HOUR).isoformat()}
    state = _state(engine)
    assert state is not None
    assert (state.pending_since, state.firing_since, state.updated_at) == (t0, t0 + 2 * HOUR, t0 + 3 * HOUR)


def test_a_single_false_evaluation_resets_the_pending_period(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, **{"for": "2h"})])
    t0 = clock()
    shares = [0.5, 0.5, 0.1, 0.5, 0.5, 0.5]  # false at t0+2h: the 2h count restarts at t0+3h
    reports = [_tick(engine, planner, t0 + i * HOUR, share) for i, share in enumerate(shares)]
    assert [_statuses(r) for r in reports] == [[], [], [], [], [], ["proposed"]]
    assert [r.pending.get("m", []) for r in reports] == [["p"], ["p"], [], ["p"], ["p"], []]


def test_keep_firing_for_keeps_firing_after_the_condition_stops_then_stops(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, keep_firing_for="2h")])
    t0 = clock()
    shares = [0.5, 0.1, 0.1, 0.1, 0.1]
    reports = [_tick(engine, planner, t0 + i * HOUR, share) for i, share in enumerate(shares)]
    # fires at once (for 0), then 1h and 2h after the condition last held, and not 3h after
    assert [_statuses(r) for r in reports] == [["proposed"], ["proposed"], ["proposed"], [], []]
    kept = reports[2].decisions["m"][0]
    assert kept.evidence["firing"]["last_true_at"] == t0.isoformat()
    assert kept.evidence["context"]["drift"]["share_drifted"] == 0.1  # the condition itself no longer holds
    state = _state(engine)
    assert state is not None and (state.pending_since, state.firing_since) == (None, None)


def test_the_condition_holding_again_while_kept_firing_continues_the_same_firing_period(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, keep_firing_for="1h", **{"for": "1h"})])
    t0 = clock()
    shares = [0.5, 0.5, 0.1, 0.5]
    reports = [_tick(engine, planner, t0 + i * HOUR, share) for i, share in enumerate(shares)]
    assert [_statuses(r) for r in reports] == [[], ["proposed"], ["proposed"], ["proposed"]]
    assert reports[3].decisions["m"][0].evidence["firing"]["firing_since"] == (t0 + HOUR).isoformat()


def test_without_keep_firing_for_a_firing_policy_stops_at_the_first_false_evaluation(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, **{"for": "1h"})])
    t0 = clock()
    reports = [_tick(engine, planner, t0 + i * HOUR, share) for i, share in enumerate([0.5, 0.5, 0.1, 0.5])]
    assert [_statuses(r) for r in reports] == [[], ["proposed"], [], []]


def test_a_missing_signal_resets_pending_state_and_is_reported(engine, clock):
    # max_age 30m: an observation from the previous hour is stale, so a tick without one has no drift signal
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, **{"for": "2h"})], max_age=timedelta(minutes=30))
    t0 = clock()
    shares: list[float | None] = [0.5, 0.5, None, 0.5, 0.5, 0.5]
    reports = [_tick(engine, planner, t0 + i * HOUR, share) for i, share in enumerate(shares)]
    assert [_statuses(r) for r in reports] == [[], [], [], [], [], ["proposed"]]
    (error,) = reports[2].errors
    assert (error.policy, error.field, error.missing) == ("p", "spec.when", True)


def test_a_missing_signal_ends_keep_firing_at_once(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, keep_firing_for="6h")],
                      max_age=timedelta(minutes=30))
    t0 = clock()
    reports = [_tick(engine, planner, t0 + i * HOUR, share) for i, share in enumerate([0.5, 0.1, None, 0.1])]
    assert [_statuses(r) for r in reports] == [["proposed"], ["proposed"], [], []]


def test_an_unless_that_cannot_be_evaluated_also_resets(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, unless="performance.accuracy > 0.9", cooldown=0,
                                   **{"for": "1h"})], max_age=timedelta(minutes=30))
    t0 = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        observe(session, model, t0, drift__share_drifted=0.5, performance__accuracy=0.5)
        planner.plan(session, [model], t0)
        observe(session, model, t0 + HOUR, drift__share_drifted=0.5)  # no accuracy: the guard cannot be checked
        held_back = planner.plan(session, [model], t0 + HOUR)
        observe(session, model, t0 + 2 * HOUR, drift__share_drifted=0.5, performance__accuracy=0.5)
        restarted = planner.plan(session, [model], t0 + 2 * HOUR)
        observe(session, model, t0 + 3 * HOUR, drift__share_drifted=0.5, performance__accuracy=0.5)
        fired = planner.plan(session, [model], t0 + 3 * HOUR)
    assert (held_back.decisions["m"], restarted.decisions["m"]) == ([], [])
    assert restarted.pending == {"m": ["p"]}
    assert _statuses(fired) == ["proposed"]


def test_a_replayed_tick_does_not_advance_the_state(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, **{"for": "2h"})])
    t0 = clock()
    _tick(engine, planner, t0, 0.5)  # pending since t0
    _tick(engine, planner, t0 + HOUR, 0.1)  # reset
    before = _state(engine)
    with session_scope(engine) as session:  # t0 replayed (a retried flow run): must not bring back pending_since=t0
        model = add_model(session)
        replay = planner.plan(session, [model], t0)
    after = _state(engine)
    assert replay.decisions["m"] == [] and replay.pending == {}
    assert before is not None and after is not None
    assert (after.pending_since, after.last_true_at, after.updated_at) == (
        before.pending_since, before.last_true_at, before.updated_at) == (None, t0, t0 + HOUR)
    reports = [_tick(engine, planner, t0 + i * HOUR, 0.5) for i in (2, 3, 4)]
    assert [_statuses(r) for r in reports] == [[], [], ["proposed"]]  # pending from t0+2h, not from t0


def test_replaying_the_firing_tick_gives_the_same_decision_even_if_the_condition_changed(engine, clock):
    t0 = clock()
    planner = Planner([make_policy("p", when=DRIFTED, cooldown=0, **{"for": "1h"})])
    _tick(engine, planner, t0, 0.5)
    fired = _tick(engine, planner, t0 + HOUR, 0.5)
    # the same tick again, now with a policy library whose condition no longer holds
    replay = _tick(engine, Planner([make_policy("p", when="false", cooldown=0, **{"for": "1h"})]), t0 + HOUR, None)
    assert replay.created == 0
    assert [(d.id, d.status) for d in replay.decisions["m"]] == [(d.id, d.status) for d in fired.decisions["m"]]
    state = _state(engine)
    assert state is not None and state.updated_at == t0 + HOUR and state.firing_since == t0 + HOUR


def test_a_restarted_controller_resumes_the_pending_period(engine, clock):
    t0 = clock()
    policy_text = {"when": DRIFTED, "cooldown": 0, "for": "2h"}
    _tick(engine, Planner([make_policy("p", **policy_text)]), t0, 0.5)
    _tick(engine, Planner([make_policy("p", **policy_text)]), t0 + HOUR, 0.5)
    # a new process: a new Planner, new policy objects; only the knowledge base remembers
    fired = _tick(engine, Planner([make_policy("p", **policy_text)]), t0 + 2 * HOUR, 0.5)
    assert _statuses(fired) == ["proposed"]


def test_policies_without_for_or_keep_firing_for_keep_no_state(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED)])
    report = _tick(engine, planner, clock(), 0.5)
    assert _statuses(report) == ["proposed"]
    assert _state(engine) is None
    with session_scope(engine) as session:
        assert len(session.exec(select(Decision)).all()) == 1


def test_a_pending_policy_whose_condition_never_held_writes_no_state(engine, clock):
    planner = Planner([make_policy("p", when=DRIFTED, **{"for": "1h"})])
    _tick(engine, planner, clock(), 0.1)
    assert _state(engine) is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("for", "soon", "not a duration"),
    ("keep_firing_for", -5, "negative"),
])
def test_bad_durations_are_refused_naming_the_field(field, value, message):
    with pytest.raises(PolicyError, match=message) as caught:
        make_policy("p", **{field: value})
    assert f"spec.{field}" in str(caught.value)
