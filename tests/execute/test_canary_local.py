"""A retrained candidate goes to production through a canary of real model-server replicas on loopback.

The whole path is real: the ``retrain`` effector trains and gates the
candidate, starts its canary replicas beside production's (processes that
answer ``/predict``), the test sends requests to both and logs what each
served, the Monitor scores the canary's predictions apart, the verification
judges each step by the policy's ``verify`` and the Execute stage widens,
promotes or aborts. Each tick uses fresh verifier and rollout objects, as a
restarted controller would, and repeats itself to show nothing happens twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from knowledge import queries, registry
from knowledge.canaries import canary_of_run
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, ModelVersion
from mape.execute.canary import CanaryRollout
from mape.execute.serving import production_artifact
from mape.monitor.stage import Monitor
from mape.serving.local import LocalReplicaSet
from tests.execute.canary_world import HOUR, CanaryWorld, make_world, predict

PORTS = (39100, 39199)  # apart from the other serving tests' ranges
SERVING = {"replicas": {"min_replicas": 1, "max_replicas": 4},
           "local": {"port_range": list(PORTS), "startup_timeout": "30s"}}


@pytest.fixture
def world(sqlite_engine, tmp_path: Path, clock):
    """The canary world with a local serving target: ``production`` replica set started at 2 replicas of v1."""
    world = make_world(sqlite_engine, tmp_path, clock(), serving=SERVING)
    production = LocalReplicaSet("ranker", tmp_path / "serving",
                                 production_artifact(sqlite_engine, world.model_id, "ranker"), port_range=PORTS)
    canary = LocalReplicaSet("ranker", tmp_path / "serving", lambda: (0, ""), port_range=PORTS, track="canary")
    yield world, production, canary
    canary.stop_all()
    production.stop_all()


def _endpoints(replicas: LocalReplicaSet) -> list[str]:
    return list(replicas.health().endpoints)


def _serve_hour(world: CanaryWorld, production: LocalReplicaSet, canary: LocalReplicaSet, start, n: int = 600) -> None:
    """Send an hour of requests round-robin over every ready replica; log what each served, with its version."""
    targets = [(endpoint, record.version) for replicas in (production, canary)
               for endpoint, record in zip(_endpoints(replicas), replicas.members())]
    frame = world.requests(n, start)
    for index, (endpoint, version) in enumerate(targets):
        part = frame.iloc[index::len(targets)]
        world.log(part, predict(endpoint, part), version)


def _tick(world: CanaryWorld, at) -> tuple[Any, Any]:
    """Monitor, verify, move the canaries: the tick's stages in the controller's order, fresh objects each time."""
    with session_scope(world.engine) as session:
        Monitor([world.config], serving_dir=world.directory / "serving").run(session, {"ranker": world.model_id}, at)
    report = world.verify(at)
    rollout = CanaryRollout(world.engine, models={"ranker": world.config}, serving_dir=world.directory / "serving",
                            actor="test")
    return report, rollout.advance(at)


def _kinds(engine, prefix: str = "canary.") -> list[str]:
    with session_scope(engine) as session:
        return [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.id)) if e.kind.startswith(prefix)]


@pytest.mark.slow  # real model-server processes: several seconds
def test_a_candidate_widens_step_by_step_and_becomes_production_with_its_replicas(world, clock):
    world, production, canary = world
    t0 = clock()
    production.scale(2)
    before = {r.pid for r in production.members()}

    run = world.retrain(t0, canary={"steps": [0.3, 0.5], "bake": "1h"})
    assert run.state == "succeeded", run.message
    assert run.result["promoted"] is False
    started = run.result["canary"]
    assert (started["state"], started["step"], started["steps"], started["share"]) == ("running", 1, 2, 0.3)
    assert (started["replicas"], started["stable_replicas"], started["served_share"]) == (1, 2, 0.3333)
    # one replica of the candidate answers beside production's two, which were not touched
    assert [r.version for r in canary.members()] == [2]
    assert {r.pid for r in production.members()} == before and {r.version for r in production.members()} == {1}
    assert len(predict(_endpoints(canary)[0], world.requests(3, t0))) == 3
    with session_scope(world.engine) as session:
        assert registry.production_version(session, world.model_id).version == 1
        assert session.exec(select(ModelVersion).where(ModelVersion.version == 2)).one().stage == "canary"
        assert queries.verification_blocks(session, t0) == {}
    assert _kinds(world.engine) == ["canary.started"]

    # hour 1: a third of the traffic goes to the candidate; its own accuracy holds, so the canary widens
    _serve_hour(world, production, canary, t0)
    report, moves = _tick(world, t0 + HOUR)
    (judged,) = report.canary_steps
    assert "canary step 1 of 2 (30% of the replicas, 1 beside 2) of version 2" in judged and judged.endswith(": pass")
    assert report.verdicts == []
    (move,) = moves.moves
    assert (move.move, move.step, move.share, move.replicas) == ("widened", 2, 0.5, 2)
    assert [r.version for r in canary.members()] == [2, 2]
    with session_scope(world.engine) as session:
        row = canary_of_run(session, run.id)
        accuracy = queries.latest_metrics(session, world.model_id, until=t0 + HOUR, prefix="canary.")
        assert (row.state, row.step, row.step_verdict, row.step_until) == ("running", 1, None, t0 + 2 * HOUR)
        assert [(h["step"], h["verdict"], h["true"], h["false"]) for h in row.history] == [(1, "pass", 1, 0)]
    assert accuracy["canary.version"].value == 2.0 and accuracy["canary.accuracy"].value > 0.8

    # the same tick again, by another controller: nothing is counted or moved twice
    again, moved = _tick(world, t0 + HOUR)
    assert (again.evaluated, again.canary_steps, moved.moves) == (0, [], [])
    assert _kinds(world.engine) == ["canary.started", "canary.step_pass", "canary.widened"]

    # hour 2: half the traffic; the last step holds: version 2 is production, served by production's replicas
    _serve_hour(world, production, canary, t0 + HOUR)
    report, moves = _tick(world, t0 + 2 * HOUR)
    (move,) = moves.moves
    assert move.move == "promoted" and "all 2 steps held, the last at 50% of the replicas" in move.detail
    assert canary.replicas() == 0
    members = production.members()
    assert [r.version for r in members] == [2, 2] and not {r.pid for r in members} & before
    assert len(predict(_endpoints(production)[0], world.requests(3, t0))) == 3
    with session_scope(world.engine) as session:
        stages = {v.version: v.stage for v in registry.versions(session, world.model_id)}
        v2 = registry.production_version(session, world.model_id)
        row = canary_of_run(session, run.id)
        assert stages == {1: "archived", 2: "production"}
        assert v2.promoted_at == t0 + 2 * HOUR
        assert v2.evaluation["canary"]["outcome"] == "promoted"
        assert [h["verdict"] for h in v2.evaluation["canary"]["history"]] == ["pass", "pass"]
        assert (row.state, row.finished_at) == ("promoted", t0 + 2 * HOUR)
    assert _kinds(world.engine) == ["canary.started", "canary.step_pass", "canary.widened", "canary.step_pass",
                                    "canary.promoted"]

    # the retrain's own verify starts now, from the promotion, as after any promotion
    started = world.verify(t0 + 3 * HOUR).started
    with session_scope(world.engine) as session:
        verified = session.get(type(run), run.id)
        assert started == [run.id] and verified.verdict == "pending"
        assert verified.verify_until == t0 + 2 * HOUR + 3 * HOUR


@pytest.mark.slow  # real model-server processes: several seconds
def test_a_step_that_does_not_hold_withdraws_the_canary_and_rejects_the_candidate(world, clock):
    world, production, canary = world
    t0 = clock()
    production.scale(1)
    before = [(r.pid, r.version) for r in production.members()]
    strict = {"expect": "performance.accuracy >= 0.999", "within": "3h"}  # no candidate reaches it

    run = world.retrain(t0, canary={"steps": [{"share": 0.5, "bake": "1h"}]}, verify=strict)
    assert run.state == "succeeded" and run.result["canary"]["replicas"] == 1
    _serve_hour(world, production, canary, t0)
    report, moves = _tick(world, t0 + HOUR)

    (verdict,) = report.verdicts
    assert (verdict.run_id, verdict.verdict, verdict.outcome, verdict.decision_id) == (run.id, "fail", "canary_aborted",
                                                                                       None)
    (move,) = moves.moves
    assert move.move == "aborted" and move.detail.endswith("ended fail at verification; production untouched")
    assert canary.replicas() == 0
    assert [(r.pid, r.version) for r in production.members()] == before  # production never changed
    with session_scope(world.engine) as session:
        stages = {v.version: v.stage for v in registry.versions(session, world.model_id)}
        v2 = session.exec(select(ModelVersion).where(ModelVersion.version == 2)).one()
        judged = session.get(type(run), run.id)
        assert stages == {1: "production", 2: "rejected"}
        history = v2.evaluation["canary"]["history"]
        assert [(h["verdict"], h["false"], h["expect"]) for h in history] == [
            ("fail", 1, "performance.accuracy >= 0.999")]
        assert v2.evaluation["canary"]["outcome"] == "aborted" and v2.evaluation["champion_version"] == 1
        assert (judged.verdict, judged.verification["outcome"]["outcome"]) == ("fail", "canary_aborted")
        # the failed change blocks its policy on the model, as any failed verification does
        assert list(queries.verification_blocks(session, t0 + HOUR)) == [(world.model_id, "retrain-canary")]
        # and no rollback: there is nothing to undo
        assert [d.action for d in queries.decisions(session, model_id=world.model_id)] == ["retrain"]
    assert _kinds(world.engine) == ["canary.started", "canary.step_fail", "canary.aborted"]
    assert _kinds(world.engine, "verification.") == ["verification.fail"]
    # a later tick: the run is not verified again (its verdict is final), nothing moves
    later, moved = _tick(world, t0 + 2 * HOUR)
    assert (later.started, later.verdicts, moved.moves) == ([], [], [])


def test_without_a_serving_section_the_promotion_is_direct_and_says_why(sqlite_engine, tmp_path: Path, clock):
    world = make_world(sqlite_engine, tmp_path, clock(), serving=None)
    run = world.retrain(clock(), canary={"steps": [0.2], "bake": "1h"})
    assert run.state == "succeeded", run.message
    assert run.result["promoted"] is True
    assert run.result["canary"] == {"state": "unsupported", "reason": "model ranker has no serving section, so no "
                                                                      "share of its replicas can serve a candidate"}
    with session_scope(sqlite_engine) as session:
        v2 = registry.production_version(session, world.model_id)
        (event,) = [e for e in session.exec(select(AuditEvent)) if e.kind == "canary.unsupported"]
        assert v2.version == 2 and v2.evaluation["canary"]["outcome"] == "unsupported"
        assert (event.payload["promotion"], event.payload["run"]) == ("direct", run.id)
        assert canary_of_run(session, run.id) is None


def test_without_a_version_column_the_canary_cannot_be_verified_so_the_promotion_is_direct(
        sqlite_engine, tmp_path: Path, clock):
    world = make_world(sqlite_engine, tmp_path, clock(), serving=SERVING, version_column=None)
    run = world.retrain(clock(), canary={"steps": [0.2], "bake": "1h"})
    assert run.state == "succeeded" and run.result["promoted"] is True
    assert "has no version_column" in run.result["canary"]["reason"]
    # nothing was started
    assert LocalReplicaSet("ranker", tmp_path / "serving", lambda: (0, ""), track="canary").replicas() == 0


def test_a_production_without_replicas_has_no_traffic_to_share(world, clock):
    world, production, canary = world
    run = world.retrain(clock(), canary={"steps": [0.2], "bake": "1h"})
    assert run.result["promoted"] is True
    assert run.result["canary"]["reason"] == "local replicas of ranker runs no replica, so no share of its traffic " \
                                             "can go to a canary"
    assert canary.replicas() == 0
