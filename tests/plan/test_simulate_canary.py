"""``mape policy simulate`` and canaries: a recorded canary keeps its model busy in the replay, as it did live,
and a candidate policy's canary is described (its steps) and said not to be replayed.

The history is recorded as the controller records it: each tick writes its
observations, the canary's moves happen before planning (the verify and
canary stages), the real :class:`~mape.plan.planner.Planner` plans, and the
retrain that starts the canary runs after planning.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Canary, Decision, ManagedModel, ModelVersion
from mape.plan import Planner
from mape.plan.canary_replay import NOT_REPLAYED
from mape.plan.simulate import simulate
from tests.plan.helpers import add_model, make_policy, observe

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
TICKS = 8
CANARY = {"steps": [0.25, {"share": 0.5, "bake": "2h"}], "bake": "2h"}
VERIFY = {"expect": "performance.accuracy >= baseline.accuracy - 0.03", "within": "3h"}


def at(k: int) -> datetime:
    return T0 + k * HOUR


def _policies(canary: dict | None = CANARY) -> list:
    params = {"window": "6h", **({"canary": canary} if canary is not None else {})}
    return [make_policy("retrain-on-drift", when="has(drift.share_drifted) && drift.share_drifted > 0.3",
                        params=params, verify=VERIFY, cooldown="30m")]


def _canary_moves(session: Session, model: ManagedModel, k: int, t: datetime) -> None:
    """The verify and canary stages of tick k, before planning: the canary widens at 2 and is promoted at 4."""
    canary = session.exec(select(Canary)).first()
    if canary is None:
        return
    if k in (2, 4):
        canary.history = [*canary.history, {"step": canary.step + 1, "share": canary.share,
                                            "started_at": canary.step_started_at.isoformat(),
                                            "until": t.isoformat(), "judged_at": t.isoformat(), "verdict": "pass"}]
    if k == 2:
        canary.step, canary.share, canary.replicas = 1, 0.5, 2
        canary.step_started_at, canary.step_until = t, t + 2 * HOUR
    if k == 4:
        candidate = session.get(ModelVersion, canary.version_id)
        registry.promote(session, candidate, actor="controller", reason="canary held", at=t)
        canary.state, canary.finished_at = "promoted", t
    session.add(canary)


def _start_canary(session: Session, model: ManagedModel, t: datetime, decided: list[Decision]) -> None:
    """After planning at tick 0: the retrain runs, its candidate passes the gate and starts a canary."""
    (decision,) = [d for d in decided if d.status == "proposed"]
    run = ActionRun(decision_id=decision.id, model_id=model.id, action="retrain", params=decision.params,
                    state="succeeded", idempotency_key=f"mape-decision-{decision.id}", created_at=t, started_at=t,
                    finished_at=t, updated_at=t)
    session.add(run)
    session.flush()
    candidate = registry.register_version(session, model_id=model.id, artifact_uri="test://2",
                                          metrics={"accuracy": 0.93}, created_by_action_run_id=run.id)
    registry.start_canary(session, candidate, actor="controller", at=t, reason="gate passed", evaluation={})
    session.add(Canary(action_run_id=run.id, model_id=model.id, version_id=candidate.id, champion_version_id=1,
                       target="local", steps=[{"share": 0.25, "bake": "2h"}, {"share": 0.5, "bake": "2h"}],
                       step=0, share=0.25, replicas=1, stable_replicas=3, step_started_at=t, step_until=t + 2 * HOUR,
                       created_at=t, updated_at=t))


def _record(engine: Engine) -> ManagedModel:
    planner = Planner(_policies(), actor="controller", max_age=timedelta(minutes=30))
    with session_scope(engine) as session:
        model = add_model(session, "m1")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri="test://1", metrics={"accuracy": 0.9})
        registry.promote(session, v1, actor="setup", at=T0 - timedelta(days=1))
    for k in range(TICKS):
        t = at(k)
        with session_scope(engine) as session:
            queries.begin_tick(session, t, controller_id="controller")
            observe(session, model, t, drift__share_drifted=0.5)
            _canary_moves(session, model, k, t)
            session.flush()
            report = planner.plan(session, [model], t)
            if k == 0:
                _start_canary(session, model, t, report.all_decisions)
    return model


def test_a_recorded_canary_keeps_its_model_busy_in_the_replay_at_the_step_it_was_at(engine):
    model = _record(engine)
    with session_scope(engine) as session:
        live = {ensure(d.tick_at): (d.status, d.reason) for d in queries.decisions(session, model_id=model.id)}
    # live: busy from the tick after the canary started until the tick it was promoted (before planning)
    assert live[at(1)] == ("suppressed", "busy: canary 1 of retrain run 1 (step 1 of 2, 25% of the replicas) in "
                                         "flight for model m1")
    assert live[at(3)][1].startswith("busy: canary 1 of retrain run 1 (step 2 of 2, 50% of the replicas)")
    assert live[at(4)][0] == "proposed"

    report = simulate(engine, _policies(), start=at(0), end=at(TICKS - 1), models=[model],
                      max_age=timedelta(minutes=30))
    assert report.agrees, [t.as_dict(only_diff=True) for t in report.ticks if t.differs]
    assert report.summary.recorded_canaries == 1
    assert "  1 recorded canary kept its model busy while running, as live" in list(report.summary.lines())


def test_a_candidate_policys_canary_is_described_and_said_not_to_be_replayed(engine):
    model = _record(engine)
    report = simulate(engine, _policies({"steps": [0.1, 0.3, {"share": 0.6, "bake": "4h"}], "bake": "1h"}),
                      start=at(0), end=at(TICKS - 1), models=[model], max_age=timedelta(minutes=30))
    summary = report.summary.as_dict()["canaries"]
    (plan,) = summary["policies"].values()
    simulated = sum(1 for tick in report.ticks for o in tick.simulated if o.status == "proposed")
    assert plan == {"steps": [{"share": 0.1, "bake": "1h"}, {"share": 0.3, "bake": "1h"},
                              {"share": 0.6, "bake": "4h"}],
                    "plan": "10% of the replicas for 1h, then 30% of the replicas for 1h, then 60% of the replicas "
                            "for 4h, then production",
                    "simulated_retrains": simulated, "replayed": False, "note": NOT_REPLAYED}
    assert simulated >= 2 and summary["recorded"] == 1
    line = next(line for line in report.summary.lines() if line.startswith("  canary of retrain-on-drift"))
    assert f"{simulated} simulated retrains would each start one after the gate" in line
    assert "not replayed" in line and "canary.* observations" in line

    plain = simulate(engine, _policies(None), start=at(0), end=at(TICKS - 1), models=[model],
                     max_age=timedelta(minutes=30))
    assert plain.summary.as_dict()["canaries"] == {"policies": {}, "recorded": 1}


def ensure(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
