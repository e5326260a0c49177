"""The evaluation context reflects the knowledge base as of the tick, and leaves out what is not known."""

from __future__ import annotations

import json
from datetime import timedelta

from knowledge import registry
from knowledge.database import session_scope
from knowledge.tables import Decision
from mape.plan import CONTEXT_ROOTS, build_context
from tests.plan.helpers import add_model, observe, open_symptom


def test_an_unobserved_model_has_every_root_and_no_signals(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session, "fresh", team="risk")
        context = build_context(session, model, clock())
    assert list(context) == list(CONTEXT_ROOTS)
    assert context == {
        "drift": {}, "performance": {}, "fairness": {}, "gpu": {}, "carbon": {}, "serving": {}, "quality": {},
        "baseline": {}, "promotion": {}, "symptoms": {}, "since_last": {},
        "model": {"name": "fresh", "labels": {"team": "risk"}, "versions": 0, "can_roll_back": False},
    }


def test_the_newest_summary_observations_fill_drift_and_performance(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        observe(session, model, clock(), drift__share_drifted=0.1, performance__accuracy=0.95)
        later = clock.advance(timedelta(minutes=5))
        observe(session, model, later, drift__share_drifted=0.4, drift__n_drifted=4.0, drift__n_features=10.0,
                drift__min_q_value=0.001, drift__detected=1.0, performance__accuracy_drop=0.06,
                performance__n_labelled=250.0, performance__f1=None)
        observe(session, model, clock.advance(timedelta(minutes=5)), drift__share_drifted=0.9)  # after the tick

        context = build_context(session, model, later)

    assert context["drift"] == {"share_drifted": 0.4, "n_drifted": 4.0, "n_features": 10.0, "min_q_value": 0.001,
                                "detected": True}
    assert context["drift"]["detected"] is True
    assert isinstance(context["drift"]["n_drifted"], float)  # CEL: n_drifted / n_features is a ratio, not 0
    # performance.f1 had no value: absent, not zero
    assert context["performance"] == {"accuracy": 0.95, "accuracy_drop": 0.06, "n_labelled": 250.0}


def test_per_feature_observations_stay_out_of_the_summary(engine, clock):
    from knowledge import queries
    from knowledge.tables import Observation

    with session_scope(engine) as session:
        model = add_model(session)
        queries.add_observations(session, [
            Observation(time=clock(), model_id=model.id, sensor="drift", metric="drift.p_value", value=0.01,
                        labels={"feature": "age"}),
        ])
        observe(session, model, clock(), drift__share_drifted=0.5)
        assert build_context(session, model, clock())["drift"] == {"share_drifted": 0.5}


def test_stale_signals_are_left_out_with_max_age(engine, clock):
    start = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        observe(session, model, start, drift__share_drifted=0.5)
        open_symptom(session, model, "data_drift", start)
        now = clock.advance(timedelta(hours=3))
        observe(session, model, now, performance__accuracy=0.9)

        fresh = build_context(session, model, now, max_age=timedelta(hours=1))
        unbounded = build_context(session, model, now)

    assert fresh["drift"] == {} and fresh["symptoms"] == {}
    assert fresh["performance"] == {"accuracy": 0.9}
    assert unbounded["drift"] == {"share_drifted": 0.5} and "data_drift" in unbounded["symptoms"]


def test_open_symptoms_by_kind_with_age(engine, clock):
    opened = clock()
    with session_scope(engine) as session:
        model = add_model(session)
        open_symptom(session, model, "data_drift", opened, severity="critical")
        closed = open_symptom(session, model, "performance_drop", opened)
        closed.status = "closed"
        session.add(closed)
        open_symptom(session, model, "fairness_gap", clock() + timedelta(hours=2))  # opened after the tick
        context = build_context(session, model, clock.advance(timedelta(minutes=30)))

    assert context["symptoms"] == {
        "data_drift": {"severity": "critical", "opened_at": opened.isoformat(), "age_seconds": 1800.0},
    }


def test_baseline_versions_and_rollback_target(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v1",
                                       metrics={"accuracy": 0.91, "f1": 0.8})
        registry.promote(session, v1, actor="test", at=clock())
        only_one = build_context(session, model, clock.advance(timedelta(hours=1)))

        v2 = registry.register_version(session, model_id=model.id, artifact_uri="file:///v2",
                                       metrics={"accuracy": 0.93})
        promoted = clock.advance(timedelta(hours=1))
        registry.promote(session, v2, actor="test", at=promoted)
        registry.register_version(session, model_id=model.id, artifact_uri="file:///v3")  # a candidate
        context = build_context(session, model, clock.advance(timedelta(minutes=10)))

    assert only_one["model"]["can_roll_back"] is False
    assert only_one["baseline"] == {"accuracy": 0.91, "f1": 0.8}
    assert context["baseline"] == {"accuracy": 0.93}
    assert context["model"] == {"name": "m", "labels": {}, "versions": 3, "can_roll_back": True,
                                "rollback_version": 1, "production_version": 2, "production_age_seconds": 600.0}
    assert context["promotion"] == {}  # promoted by a person, not by the gate


def test_the_promotion_root_holds_the_gates_numbers_of_the_version_in_production(engine, clock):
    evaluation = {"passed": True, "metric": "accuracy", "n": 300, "champion_version": 1,
                  "candidate": {"accuracy": 0.9}, "champion": {"accuracy": 0.85},
                  "fairness": {"metric": "equalized_odds_difference", "candidate": 0.1, "champion": 0.2,
                               "gaps": {"demographic_parity_difference": {"candidate": 0.12, "champion": 0.31},
                                        "equalized_odds_difference": {"candidate": 0.1, "champion": 0.2},
                                        "equal_opportunity_difference": {"candidate": None, "champion": 0.05}}}}
    with session_scope(engine) as session:
        model = add_model(session)
        versions = [registry.register_version(session, model_id=model.id, artifact_uri=f"file:///v{i}")
                    for i in (1, 2, 3)]
        registry.promote(session, versions[0], actor="test", at=clock())
        registry.promote(session, versions[1], actor="test", at=clock.advance(timedelta(hours=1)),
                         evaluation=evaluation)
        context = build_context(session, model, clock.advance(timedelta(minutes=5)))
        registry.promote(session, versions[2], actor="test", at=clock.advance(timedelta(hours=1)))
        after = build_context(session, model, clock.advance(timedelta(minutes=5)))

    assert context["promotion"] == {
        "n": 300.0, "replaced_version": 1, "accuracy": 0.9, "replaced_accuracy": 0.85,
        "demographic_parity_difference": 0.12, "replaced_demographic_parity_difference": 0.31,
        "equalized_odds_difference": 0.1, "replaced_equalized_odds_difference": 0.2,
        "replaced_equal_opportunity_difference": 0.05}  # an undefined gap is absent, never 0
    assert context["model"]["rollback_version"] == 1
    assert after["promotion"] == {}  # version 3's own promotion had no gate
    assert after["model"]["rollback_version"] == 2  # the version that served last


def test_since_last_counts_only_acting_decisions_per_action(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session)
        for status, action, minutes_ago in [("proposed", "retrain", 60), ("suppressed", "retrain", 10),
                                            ("dry_run", "rollback", 5), ("awaiting_approval", "rollback", 30)]:
            at = clock() - timedelta(minutes=minutes_ago)
            session.add(Decision(created_at=at, tick_at=at, model_id=model.id, policy_name="p", action=action,
                                 status=status, dedup_key=f"{status}/{action}"))
        session.add(Decision(created_at=clock() + timedelta(minutes=1), model_id=model.id, policy_name="p",
                             action="rescale", status="proposed", dedup_key="future"))
        session.flush()
        context = build_context(session, model, clock())
    assert context["since_last"] == {"retrain": 3600.0, "rollback": 1800.0}


def test_the_context_is_json_serialisable(engine, clock):
    with session_scope(engine) as session:
        model = add_model(session, team="risk")
        observe(session, model, clock(), drift__share_drifted=float("nan"), performance__accuracy=0.9)
        open_symptom(session, model, "data_drift", clock())
        context = build_context(session, model, clock())
    assert json.loads(json.dumps(context, allow_nan=False)) == context
    assert "share_drifted" not in context["drift"]  # NaN is not a signal


def test_the_fleet_wide_build_equals_the_per_model_build(engine, clock):
    """build_contexts reads the whole fleet in a few queries; it must see exactly what build_context sees."""
    from mape.plan.context import build_contexts

    with session_scope(engine) as session:
        a, b, c = add_model(session, "a", team="risk"), add_model(session, "b"), add_model(session, "c")
        for model, versions in ((a, 2), (b, 1)):
            for n in range(versions):
                version = registry.register_version(session, model_id=model.id, artifact_uri=f"file:///{n}",
                                                    metrics={"accuracy": 0.9 - n / 10})
                registry.promote(session, version, actor="t", at=clock.advance(timedelta(minutes=1)))
        observe(session, a, clock(), drift__share_drifted=0.5, performance__accuracy=0.8)
        observe(session, b, clock.advance(timedelta(hours=2)), drift__share_drifted=0.1)
        open_symptom(session, a, "data_drift", clock() - timedelta(hours=1))
        session.add(Decision(model_id=b.id, policy_name="p", action="retrain", status="proposed",
                             dedup_key="b/p/t", created_at=clock() - timedelta(minutes=30)))
        session.flush()
        at = clock.advance(timedelta(minutes=5))
        for max_age in (None, timedelta(hours=1)):
            fleet = build_contexts(session, [a, b, c], at, max_age=max_age)
            assert fleet == {m.id: build_context(session, m, at, max_age=max_age) for m in (a, b, c)}
        assert fleet[a.id]["drift"] == {}  # older than the hour: stale
        assert fleet[a.id]["model"]["can_roll_back"] is True and fleet[b.id]["model"]["can_roll_back"] is False
        assert fleet[b.id]["since_last"] == {"retrain": 2100.0}
