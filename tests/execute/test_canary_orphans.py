"""Canary replicas that no running canary owns are withdrawn: a retrain's lost attempt started them.

A real retrain attempt starts its canary's model-server processes and is
killed before its transaction commits (:mod:`tests.execute.canary_crash`), so
its replicas run on with no canary row. When its run then fails for good, by
the executor (every retry failed) or by reconciliation (the lost attempt was
the last; as after a controller restart), the replicas are withdrawn, audited,
and the check recorded on the run, once. Production's processes are never
touched. A running canary whose run is no longer ``succeeded`` is aborted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from knowledge import queries, registry
from knowledge.canaries import canary_of_run
from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision
from mape.execute.canary import CanaryRollout
from mape.execute.reconcile import reconcile
from mape.execute.serving import production_artifact
from mape.serving.local import LocalReplicaSet
from tests.execute.canary_world import EXPECT, CanaryWorld, make_world
from tests.plan.helpers import make_policy

REPO = Path(__file__).resolve().parents[2]
PORTS = (39300, 39399)  # apart from the other serving tests' ranges
SERVING = {"replicas": {"min_replicas": 1, "max_replicas": 4},
           "local": {"port_range": list(PORTS), "startup_timeout": "30s"}}
CANARY = {"steps": [0.3], "bake": "1h"}  # 1 replica beside production's 2
DAY = timedelta(days=1)

pytestmark = pytest.mark.slow  # real model-server processes: several seconds


@pytest.fixture
def world(sqlite_engine, tmp_path: Path, clock):
    """The canary world on the local target: production's replica set at 2 replicas of version 1."""
    world = make_world(sqlite_engine, tmp_path, clock(), serving=SERVING)
    production = LocalReplicaSet("ranker", tmp_path / "serving",
                                 production_artifact(sqlite_engine, world.model_id, "ranker"), port_range=PORTS)
    canary = LocalReplicaSet("ranker", tmp_path / "serving", lambda: (0, ""), port_range=PORTS, track="canary")
    production.scale(2)
    yield world, production, canary
    canary.stop_all()
    production.stop_all()


def _dispatch(world: CanaryWorld, at: datetime) -> int:
    """A policy's retrain decision with a canary at ``at``, dispatched: the id of its pending run."""
    params = {"window": "6h", "min_train_rows": 100, "canary": CANARY}
    loaded = make_policy("retrain-canary", when="true", params=params, verify={"expect": EXPECT, "within": "3h"})
    with session_scope(world.engine) as session:
        version = queries.record_policy_version(session, name=loaded.name, text=loaded.text)
        session.add(Decision(model_id=world.model_id, policy_name=loaded.name, policy_sha256=version.sha256,
                             action="retrain", params=params, status="proposed", created_at=at, tick_at=at,
                             dedup_key=f"{at.isoformat()}/ranker/{loaded.name}"))
    with session_scope(world.engine) as session:
        (run,) = world.executor.dispatch(session, at)
        assert run.id is not None
        return run.id


def _lose_attempt(world: CanaryWorld, run_id: int, at: datetime) -> None:
    """An attempt of the run in a process of its own, killed once its canary's replicas started."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.execute.canary_crash", world.engine.url.render_as_string(hide_password=False),
         json.dumps(SERVING), str(world.directory), str(run_id), at.isoformat()],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-3000:]


def _run(world: CanaryWorld, run_id: int) -> ActionRun:
    with session_scope(world.engine) as session:
        run = session.get(ActionRun, run_id)
        assert run is not None
        return run


def _events(world: CanaryWorld, kind: str) -> list[AuditEvent]:
    with session_scope(world.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.kind == kind).order_by(col(AuditEvent.id))))


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_the_executor_withdraws_them_when_every_retry_of_the_run_fails(world, clock):
    world, production, canary = world
    t0 = clock()
    before = [(r.pid, r.version) for r in production.members()]
    run_id = _dispatch(world, t0)
    _lose_attempt(world, run_id, t0)
    (orphan,) = canary.members()
    assert orphan.version == 2 and _run(world, run_id).state == "running"

    # the next tick finds the attempt lost: the run will be retried, and the retry's canary would replace them
    report = reconcile(world.executor, t0 + timedelta(minutes=1))
    assert _run(world, run_id).state == "pending" and report.canaries == []
    assert [r.pid for r in canary.members()] == [orphan.pid]

    # both retries fail (no labelled data in their windows)
    assert world.executor.run(run_id, t0 + 10 * DAY).state == "pending"
    assert [r.pid for r in canary.members()] == [orphan.pid]
    ended = world.executor.run(run_id, t0 + 11 * DAY)
    assert ended.state == "failed" and "no labelled data" in ended.message

    # failed for good: the executor withdrew the replicas the lost attempt had started; production as it was
    assert canary.replicas() == 0 and not _alive(orphan.pid)
    assert [(r.pid, r.version) for r in production.members()] == before
    assert ended.result["canary_replicas"]["withdrawn"] == 1
    (event,) = _events(world, "canary.orphans_withdrawn")
    assert (event.payload["run"], event.payload["run_state"], event.payload["withdrawn"]) == (run_id, "failed", 1)
    assert event.payload["target"] == "local canary replicas of ranker"
    with session_scope(world.engine) as session:
        assert canary_of_run(session, run_id) is None
        assert registry.production_version(session, world.model_id).version == 1

    # once: a later reconciliation finds nothing to do
    assert reconcile(world.executor, t0 + 12 * DAY).canaries == []
    assert len(_events(world, "canary.orphans_withdrawn")) == 1


def test_a_restarted_controller_withdraws_them_when_the_lost_attempt_was_the_last(world, clock):
    world, production, canary = world
    t0 = clock()
    before = [(r.pid, r.version) for r in production.members()]
    run_id = _dispatch(world, t0)
    for day in (10, 9):  # two attempts fail first (no labelled data before the history), the third is lost
        assert world.executor.run(run_id, t0 - day * DAY).state == "pending"
    _lose_attempt(world, run_id, t0)
    (orphan,) = canary.members()

    # the next controller's first reconciliation: the run has no retry left, so its replicas go
    report = reconcile(world.executor, t0 + timedelta(minutes=1))
    assert _run(world, run_id).state == "failed"
    assert report.canaries == [f"1 canary replica(s) of model ranker withdrawn from local canary replicas of ranker: "
                               f"no running canary owns them (action run {run_id} is failed)"]
    assert report.canaries[0] in report.as_dict()["reconciled"]
    assert canary.replicas() == 0 and not _alive(orphan.pid)
    assert [(r.pid, r.version) for r in production.members()] == before
    assert _run(world, run_id).result["canary_replicas"]["withdrawn"] == 1

    again = reconcile(world.executor, t0 + timedelta(minutes=2))
    assert (again.canaries, again.errors) == ([], [])
    assert len(_events(world, "canary.orphans_withdrawn")) == 1


def test_a_retry_that_starts_its_own_canary_keeps_the_replicas_and_owns_them(world, clock):
    world, production, canary = world
    t0 = clock()
    run_id = _dispatch(world, t0)
    _lose_attempt(world, run_id, t0)
    (orphan,) = canary.members()
    reconcile(world.executor, t0 + timedelta(minutes=1))

    ended = world.executor.run(run_id, t0 + timedelta(minutes=5))
    assert ended.state == "succeeded" and ended.result["canary"]["replicas"] == 1
    assert "canary_replicas" not in ended.result  # a running canary owns them: nothing to check
    assert [r.version for r in canary.members()] == [2]
    assert reconcile(world.executor, t0 + timedelta(minutes=6)).canaries == []
    assert canary.replicas() == 1 and _events(world, "canary.orphans_withdrawn") == []
    assert orphan.pid in {r.pid for r in canary.members()}  # the same version: kept, not restarted


def test_a_running_canary_whose_run_is_no_longer_succeeded_is_aborted(world, clock):
    world, production, canary = world
    t0 = clock()
    before = [(r.pid, r.version) for r in production.members()]
    run = world.retrain(t0, canary=CANARY)
    assert run.state == "succeeded" and canary.replicas() == 1
    with session_scope(world.engine) as session:  # say a person failed the run by hand
        session.execute(update(ActionRun).where(col(ActionRun.id) == run.id).values(state="failed"))

    rollout = CanaryRollout(world.engine, models={"ranker": world.config}, serving_dir=world.directory / "serving")
    (move,) = rollout.advance(t0 + timedelta(minutes=10)).moves
    assert move.move == "aborted" and f"its retrain run {run.id} is failed, not succeeded" in move.detail
    assert canary.replicas() == 0
    assert [(r.pid, r.version) for r in production.members()] == before
    with session_scope(world.engine) as session:
        assert canary_of_run(session, run.id).state == "aborted"
        assert {v.version: v.stage for v in registry.versions(session, world.model_id)}[2] == "rejected"
