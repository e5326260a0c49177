"""Production's replicas serve the production version after every change of production, whoever made it.

Real model-server replicas on loopback (the local serving target): a direct
promotion and a ``rollback`` move them in the effector's own attempt; a
promotion or rollback a person made in the registry alone (as ``mape models
promote|rollback`` do) is followed by the controller's next pass; a serving
target that cannot be reached is reported and tried again.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision
from mape.execute.production_serving import ProductionFollower
from mape.execute.serving import production_artifact
from mape.serving.local import LocalReplicaSet
from tests.execute.canary_world import CanaryWorld, make_world

pytestmark = pytest.mark.slow  # model-server processes start and stop (several seconds each)

PORTS = (39300, 39349)  # apart from the other serving tests' ranges
SERVING = {"replicas": {"min_replicas": 1, "max_replicas": 4},
           "local": {"port_range": list(PORTS), "startup_timeout": "30s"}}


@pytest.fixture
def world(sqlite_engine, tmp_path: Path, clock):
    """Model ``ranker`` with version 1 in production on 2 local replicas."""
    world = make_world(sqlite_engine, tmp_path, clock(), serving=SERVING)
    production = LocalReplicaSet("ranker", tmp_path / "serving",
                                 production_artifact(sqlite_engine, world.model_id, "ranker"), port_range=PORTS)
    production.scale(2)
    yield world, production
    production.stop_all()


def _served(replicas: LocalReplicaSet) -> list[int]:
    return sorted(record.version for record in replicas.members())


def _rollback(world: CanaryWorld, at) -> ActionRun:  # type: ignore[no-untyped-def]
    """A person's approved rollback decision, run by the executor."""
    return world.act(Decision(model_id=world.model_id, policy_name="manual", action="rollback", params={},
                              status="approved", created_at=at, tick_at=None, actor="ann", decided_by="ann",
                              decided_at=at, dedup_key=f"{at.isoformat()}/ranker/rollback"), at)


def _follower(world: CanaryWorld) -> ProductionFollower:
    return ProductionFollower(world.engine, models={"ranker": world.config}, serving_dir=world.directory / "serving",
                              actor="controller")


def test_a_direct_promotion_and_a_rollback_move_production_replicas_in_the_same_attempt(world, clock):
    world, production = world
    t0 = clock()
    assert _served(production) == [1, 1]
    run = world.retrain(t0, canary=None)
    assert run.state == "succeeded" and run.result["promoted"] is True, run.message
    assert _served(production) == [2, 2]
    assert "production's replicas serve version 2 (2 replica(s) replaced" in run.result["production_serving"]["detail"]

    back = _rollback(world, t0 + timedelta(hours=1))
    assert back.state == "succeeded", back.message
    assert back.result["to_version"] == 1 and _served(production) == [1, 1]
    assert production.health().ready == 2
    # the controller's pass finds nothing left to do, and says nothing
    assert _follower(world).follow(t0 + timedelta(hours=1)).rolled == []


def test_a_promotion_made_in_the_registry_alone_is_followed_once_and_audited(world, clock):
    world, production = world
    t0 = clock()
    run = world.retrain(t0, canary=None)
    assert run.state == "succeeded"
    follower = _follower(world)
    assert follower.follow(t0).rolled == []
    with session_scope(world.engine) as session:  # what `mape models rollback` does: the registry only
        registry.rollback(session, world.model_id, actor="ann", reason="by hand", at=t0 + timedelta(minutes=5))
    assert _served(production) == [2, 2]
    report = follower.follow(t0 + timedelta(minutes=10))
    assert [(r["model"], r["version"], r["replaced"]) for r in report.rolled] == [("ranker", 1, 2)]
    assert _served(production) == [1, 1] and not report.errors
    assert follower.follow(t0 + timedelta(minutes=20)).rolled == []
    with session_scope(world.engine) as session:
        (event,) = session.exec(select(AuditEvent).where(AuditEvent.kind == "serving.followed_production")).all()
    assert event.payload["version"] == 1 and event.payload["replaced"] == 2


def test_a_model_with_an_action_in_flight_is_left_to_its_effector(world, clock):
    world, production = world
    t0 = clock()
    run = world.retrain(t0, canary=None)
    assert run.state == "succeeded"
    with session_scope(world.engine) as session:
        registry.rollback(session, world.model_id, actor="ann", reason="by hand", at=t0)
        scale = Decision(model_id=world.model_id, policy_name="manual", action="rescale", params={"by": 1},
                         status="approved", created_at=t0, dedup_key="in-flight")
        session.add(scale)
        session.flush()
        session.add(ActionRun(decision_id=scale.id, model_id=world.model_id, action="rescale",
                              state="running", idempotency_key="in-flight", created_at=t0))
    follower = _follower(world)
    assert follower.follow(t0).rolled == [] and _served(production) == [2, 2]
    with session_scope(world.engine) as session:
        session.exec(select(ActionRun).where(ActionRun.idempotency_key == "in-flight")).one().state = "succeeded"
    assert [r["version"] for r in follower.follow(t0).rolled] == [1]


def test_a_replica_that_cannot_start_is_reported_and_production_is_tried_again_next_pass(world, clock, tmp_path):
    world, production = world
    t0 = clock()
    run = world.retrain(t0, canary=None)
    assert run.state == "succeeded"
    with session_scope(world.engine) as session:
        target = registry.rollback(session, world.model_id, actor="ann", reason="by hand", at=t0)
        target.artifact_uri = str(tmp_path / "gone")  # v1's artifact cannot be loaded: its replicas never answer
        session.add(target)
    follower = _follower(world)
    report = follower.follow(t0)
    assert report.rolled == [] and len(report.errors) == 1
    assert "could not be moved to version 1" in report.errors[0]
    assert _served(production) == [2, 2]  # the old replicas kept serving
    assert len(follower.follow(t0).errors) == 1  # not forgotten: tried again
