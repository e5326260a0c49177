"""A canary on Kubernetes: a second Deployment, ``<name>-canary``, scaled by the step's share (scale subresource).

The Deployments live in a recorded API server on loopback
(:mod:`tests.serving.fake_apiserver`), reached through the official client as a
cluster would be. The candidate is trained, gated and judged for real
(:mod:`tests.execute.canary_world`); the pods are not real here, so the
canary's scores are written as the Monitor writes them (``canary.*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import select

from knowledge import registry
from knowledge.canaries import canary_of_run
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, ModelVersion
from tests.execute.canary_world import HOUR, CanaryWorld, advance, canary_scores, make_world
from tests.serving.fake_apiserver import RecordedApiServer

pytest.importorskip("kubernetes")

TOKEN_ENV = "MAPE_TEST_K8S_TOKEN"


@pytest.fixture
def cluster(sqlite_engine, tmp_path: Path, clock, monkeypatch) -> Iterator[tuple[RecordedApiServer, CanaryWorld]]:
    """Deployment ``ml/ranker`` at 3 replicas and its canary twin ``ml/ranker-canary`` at 0."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with RecordedApiServer() as server:
        server.add("ml", "ranker", replicas=3)
        server.add("ml", "ranker-canary", replicas=0)
        assert server.token is not None
        monkeypatch.setenv(TOKEN_ENV, server.token)
        serving = {"target": "kubernetes", "replicas": {"min_replicas": 1, "max_replicas": 6},
                   "kubernetes": {"namespace": "ml", "deployment": "ranker", "api_server": server.url,
                                  "token_env": TOKEN_ENV, "request_timeout": "2s"}}
        yield server, make_world(sqlite_engine, tmp_path, clock(), serving=serving)


def _patches(server: RecordedApiServer) -> list[tuple[str, int]]:
    """The scale patches sent (pod template patches: ``tests/execute/test_canary_kubernetes_promotion.py``)."""
    return [(r.path.split("/")[-2], r.body["spec"]["replicas"]) for r in server.requests
            if r.method == "PATCH" and r.path.endswith("/scale")]




def test_the_canary_deployment_follows_the_steps_and_production_is_never_scaled(cluster, clock):
    server, world = cluster
    t0 = clock()
    run = world.retrain(t0, canary={"steps": [0.25, 0.5], "bake": "1h"})
    assert run.state == "succeeded", run.message
    # 1 canary pod beside 3 is a quarter of the traffic
    assert (run.result["canary"]["replicas"], run.result["canary"]["stable_replicas"]) == (1, 3)
    assert _patches(server) == [("ranker-canary", 1)]

    canary_scores(world, t0 + HOUR, 0.95)
    world.verify(t0 + HOUR)
    (move,) = advance(world, t0 + HOUR).moves
    assert (move.move, move.share, move.replicas) == ("widened", 0.5, 3)
    assert _patches(server) == [("ranker-canary", 1), ("ranker-canary", 3)]

    canary_scores(world, t0 + 2 * HOUR, 0.94)
    world.verify(t0 + 2 * HOUR)
    (move,) = advance(world, t0 + 2 * HOUR).moves
    assert move.move == "promoted"
    # the canary Deployment goes back to 0; production's replica count was only ever read
    assert _patches(server) == [("ranker-canary", 1), ("ranker-canary", 3), ("ranker-canary", 0)]
    assert server.deployments[("ml", "ranker")].replicas == 3
    with session_scope(world.engine) as session:
        assert registry.production_version(session, world.model_id).version == 2


def test_a_failed_step_scales_the_canary_deployment_to_zero(cluster, clock):
    server, world = cluster
    t0 = clock()
    run = world.retrain(t0, canary={"steps": [0.25, 0.5], "bake": "1h"})
    canary_scores(world, t0 + HOUR, 0.40)  # far below its accuracy at the gate
    report = world.verify(t0 + HOUR)
    assert [v.outcome for v in report.verdicts] == ["canary_aborted"]
    (move,) = advance(world, t0 + HOUR).moves
    assert move.move == "aborted"
    assert _patches(server) == [("ranker-canary", 1), ("ranker-canary", 0)]
    with session_scope(world.engine) as session:
        assert registry.production_version(session, world.model_id).version == 1
        assert canary_of_run(session, run.id).state == "aborted"


def test_a_transient_api_failure_while_widening_is_tried_again_at_the_next_tick(cluster, clock):
    server, world = cluster
    t0 = clock()
    run = world.retrain(t0, canary={"steps": [0.25, 0.5], "bake": "1h"})
    canary_scores(world, t0 + HOUR, 0.95)
    world.verify(t0 + HOUR)
    server.fail(503, method="PATCH", resource="scale")
    (move,) = advance(world, t0 + HOUR).moves
    assert move.move == "retrying" and "503" in move.detail
    with session_scope(world.engine) as session:
        row = canary_of_run(session, run.id)
        assert (row.step, row.step_verdict, row.attempts) == (0, "pass", 1)

    (move,) = advance(world, t0 + HOUR + HOUR / 4).moves
    assert (move.move, move.replicas) == ("widened", 3)
    with session_scope(world.engine) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.id))
        kinds = [e.kind for e in events if e.kind.startswith("canary.")]
    assert kinds == ["canary.started", "canary.step_pass", "canary.retrying", "canary.widened"]


def test_a_missing_canary_deployment_fails_the_retrain_and_names_it(sqlite_engine, tmp_path: Path, clock, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with RecordedApiServer() as server:
        server.add("ml", "ranker", replicas=2)  # no ranker-canary
        monkeypatch.setenv(TOKEN_ENV, server.token or "")
        serving = {"target": "kubernetes",
                   "kubernetes": {"namespace": "ml", "deployment": "ranker", "canary_deployment": "ranker-next",
                                  "api_server": server.url, "token_env": TOKEN_ENV, "request_timeout": "2s"}}
        world = make_world(sqlite_engine, tmp_path, clock(), serving=serving)
        run = world.retrain(clock(), canary={"steps": [0.5], "bake": "1h"})
    assert run.state == "failed" and run.attempts == 1  # permanent: a person must create it
    assert "ml/ranker-next" in run.message and "404" in run.message
    with session_scope(sqlite_engine) as session:
        # nothing of the attempt was kept: no candidate, no canary
        assert [v.version for v in session.exec(select(ModelVersion))] == [1]
        assert canary_of_run(session, run.id) is None
