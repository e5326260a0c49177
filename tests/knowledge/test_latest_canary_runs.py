"""``latest_canary_runs``: each model's newest run that asked for a canary, found by its params on both backends."""

from __future__ import annotations

from knowledge.canaries import latest_canary_runs
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision
from tests.plan.helpers import add_model


def _run(session, model, key: str, params: dict) -> ActionRun:  # type: ignore[no-untyped-def]
    decision = Decision(model_id=model.id, policy_name="p", action="retrain", status="proposed", dedup_key=key)
    session.add(decision)
    session.flush()
    run = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", params=params,
                    idempotency_key=key, state="failed")
    session.add(run)
    session.flush()
    return run


def test_the_newest_run_asking_for_a_canary_of_each_model(engine):
    with session_scope(engine) as session:
        a, b, c = (add_model(session, name) for name in ("a", "b", "c"))
        _run(session, a, "a1", {"canary": {"steps": [0.1]}})
        newest_a = _run(session, a, "a2", {"window": "1d", "canary": {"steps": [0.2, 0.5]}})
        _run(session, a, "a3", {"window": "1d"})  # newer, but no canary
        only_b = _run(session, b, "b1", {"canary": {"steps": [0.5]}})
        _run(session, c, "c1", {"window": "7d"})
        found = latest_canary_runs(session)
        assert [(run.id, model.name, canary) for run, model, canary in found] == [
            (newest_a.id, "a", None), (only_b.id, "b", None)]
        assert [run.id for run, _, _ in latest_canary_runs(session, [b.id, c.id])] == [only_b.id]
        assert latest_canary_runs(session, [c.id]) == []
