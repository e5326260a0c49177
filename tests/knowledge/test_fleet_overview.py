"""The Fleet page's one row per model: versions, health, last action, approvals, freshness, pause (both databases)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.fleet_overview import FleetRow, LastAction, PauseInfo, fleet_overview
from knowledge.tables import ActionRun, Decision, Symptom, observation_row

FRESHNESS = ["drift.n_current", "performance.n_labelled"]


def _decision(session, model_id: int, key: str, status: str, at,  # type: ignore[no-untyped-def]
              policy: str = "retrain-on-drift") -> Decision:
    decision = Decision(model_id=model_id, policy_name=policy, action="retrain", status=status, dedup_key=key,
                        created_at=at)
    session.add(decision)
    session.flush()
    return decision


def _run(session, decision: Decision, state: str,  # type: ignore[no-untyped-def]
         finished_at=None, verdict=None) -> ActionRun:
    run = ActionRun(decision_id=decision.id, model_id=decision.model_id, action=decision.action,
                    idempotency_key=f"run-{decision.id}", state=state, finished_at=finished_at, verdict=verdict)
    session.add(run)
    session.flush()
    return run


def _symptom(session, model_id: int, kind: str, severity: str, at,  # type: ignore[no-untyped-def]
             status: str = "open") -> None:
    session.add(Symptom(model_id=model_id, kind=kind, severity=severity, status=status, opened_at=at, last_seen_at=at))


def test_an_empty_knowledge_base_has_no_rows(engine):
    with session_scope(engine) as session:
        assert fleet_overview(session, freshness_metrics=FRESHNESS) == []


def test_every_model_gets_one_row_with_what_the_fleet_page_shows(engine, clock):
    t0 = clock()
    with session_scope(engine) as session:
        risk = registry.upsert_model(session, name="credit-risk", owner="risk@example.com",
                                     labels={"team": "risk", "tier": "gold"})
        fraud = registry.upsert_model(session, name="fraud", owner="", labels={})
        quiet = registry.upsert_model(session, name="a-quiet-one", owner="ops@example.com")
        v1 = registry.register_version(session, model_id=risk.id, artifact_uri="file:///v1")
        registry.promote(session, v1, actor="test", at=t0)
        v2 = registry.register_version(session, model_id=risk.id, artifact_uri="file:///v2")
        registry.promote(session, v2, actor="test", at=t0 + timedelta(hours=1))
        registry.register_version(session, model_id=fraud.id, artifact_uri="file:///candidate")  # never promoted
        _symptom(session, risk.id, "accuracy_drop", "critical", t0)
        _symptom(session, risk.id, "data_drift", "warning", t0)
        _symptom(session, risk.id, "stale_signal", "warning", t0)
        _symptom(session, risk.id, "old_drift", "critical", t0, status="closed")
        _symptom(session, fraud.id, "schema", "info", t0)
        first = _decision(session, risk.id, "d1", "proposed", t0)
        _run(session, first, "succeeded", finished_at=t0 + timedelta(minutes=30), verdict="fail")
        second = _decision(session, risk.id, "d2", "proposed", t0 + timedelta(hours=2), policy="rollback-on-fail")
        _run(session, second, "running")
        third = _decision(session, fraud.id, "d3", "approved", t0)
        _run(session, third, "succeeded", finished_at=t0 + timedelta(minutes=5), verdict="pass")
        for i, status in enumerate(["awaiting_approval", "awaiting_approval", "rejected", "expired"]):
            _decision(session, risk.id, f"w{i}", status, t0)
        _decision(session, fraud.id, "w-fraud", "awaiting_approval", t0)
        queries.add_observations(session, [
            observation_row(time=t0 + timedelta(minutes=m), model_id=risk.id, sensor=metric.split(".")[0],
                            metric=metric, value=1.0)
            for m in (0, 5, 10) for metric in FRESHNESS
        ] + [
            observation_row(time=t0 + timedelta(minutes=99), model_id=risk.id, sensor="drift",
                            metric="drift.share_drifted", value=0.5),  # not a freshness metric: not read
            observation_row(time=t0 + timedelta(minutes=3), model_id=fraud.id, sensor="drift",
                            metric="drift.n_current", value=10.0),
        ])
        queries.pause(session, "model", "fraud", actor="ada", reason="data incident", at=t0 + timedelta(hours=3))
        queries.pause(session, "policy", "credit-risk", actor="ada", reason="a policy, not the model", at=t0)
        rows = fleet_overview(session, freshness_metrics=FRESHNESS)
        assert [r.name for r in rows] == ["a-quiet-one", "credit-risk", "fraud"]
        assert rows[0] == FleetRow(model_id=quiet.id, name="a-quiet-one", owner="ops@example.com", labels={})
        risk_row, fraud_row = rows[1], rows[2]
        assert (risk_row.owner, risk_row.labels) == ("risk@example.com", {"team": "risk", "tier": "gold"})
        assert (risk_row.production_version, risk_row.promoted_at) == (2, t0 + timedelta(hours=1))
        assert risk_row.symptoms == {"critical": 1, "warning": 2}
        assert risk_row.last_action == LastAction(run_id=risk_row.last_action.run_id, action="retrain",
                                                  policy="rollback-on-fail", state="running", finished_at=None,
                                                  verdict=None)
        assert risk_row.pending_approvals == 2
        assert risk_row.signals == {m: t0 + timedelta(minutes=10) for m in FRESHNESS}
        assert risk_row.newest_signal == t0 + timedelta(minutes=10)
        assert risk_row.pause is None
        assert (fraud_row.production_version, fraud_row.symptoms, fraud_row.pending_approvals) == (None, {"info": 1}, 1)
        assert (fraud_row.last_action.state, fraud_row.last_action.verdict, fraud_row.last_action.finished_at) == (
            "succeeded", "pass", t0 + timedelta(minutes=5))
        assert str(fraud_row.last_action) == "retrain (succeeded, verdict pass)"
        assert fraud_row.signals == {"drift.n_current": t0 + timedelta(minutes=3)}
        assert fraud_row.pause == PauseInfo(paused_by="ada", reason="data incident", paused_at=t0 + timedelta(hours=3))


def test_without_freshness_metrics_no_signal_is_read(engine, clock):
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="m")
        queries.add_observations(session, [observation_row(time=clock(), model_id=model.id, sensor="drift",
                                                           metric="drift.n_current", value=1.0)])
        (row,) = fleet_overview(session)
        assert row.signals == {} and row.newest_signal is None


def test_a_single_metric_name_is_refused_naming_the_parameter(sqlite_engine):
    with session_scope(sqlite_engine) as session, pytest.raises(ValueError, match="'freshness_metrics' parameter of "
                                                                           "fleet_overview must be a sequence"):
        fleet_overview(session, freshness_metrics="drift.n_current")
