"""A canary promoted on Kubernetes: production's Deployment is pointed at the candidate, then the canary is withdrawn.

With ``serving.kubernetes.promote: patch`` (the default) the candidate's model
reference (``MAPE_MODEL_VERSION`` and ``MAPE_ARTIFACT_URI`` of the model's
container, and ``mape.io/`` annotations) goes on the canary Deployment's pod
template before it is scaled up, and on production's when the canary is
promoted; with ``pipeline`` mape sends no pod template patch at all. Canary
pods that no running canary owns (a lost attempt's) are scaled to 0 once the
run that asked for the canary fails for good. The
Deployments live in the recorded API server on loopback
(:mod:`tests.serving.fake_apiserver`), which merges the strategic merge
patches as kube-apiserver does; the candidate is trained, gated and judged
for real (:mod:`tests.execute.canary_world`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from knowledge import registry
from knowledge.canaries import canary_of_run
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, ModelVersion
from mape.serving.pod_template import ARTIFACT_ENV, VERSION_ANNOTATION, VERSION_ENV
from tests.execute.canary_world import HOUR, CanaryWorld, advance, canary_scores, make_world
from tests.serving.fake_apiserver import RecordedApiServer

pytest.importorskip("kubernetes")

TOKEN_ENV = "MAPE_TEST_K8S_TOKEN"


def _world(server: RecordedApiServer, engine, directory: Path, start: datetime, **kubernetes: Any) -> CanaryWorld:
    serving = {"target": "kubernetes", "replicas": {"min_replicas": 1, "max_replicas": 6},
               "kubernetes": {"namespace": "ml", "deployment": "ranker", "api_server": server.url,
                              "token_env": TOKEN_ENV, "request_timeout": "2s", **kubernetes}}
    return make_world(engine, directory, start, serving=serving)


@pytest.fixture
def server(monkeypatch) -> Iterator[RecordedApiServer]:
    """Deployment ``ml/ranker`` at 3 replicas serving through its pod template, ``ml/ranker-canary`` at 0."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with RecordedApiServer() as server:
        server.add("ml", "ranker", replicas=3)
        server.add("ml", "ranker-canary", replicas=0)
        monkeypatch.setenv(TOKEN_ENV, server.token or "")
        yield server


def _env(server: RecordedApiServer, name: str) -> dict[str, str]:
    (container,) = server.deployments[("ml", name)].template["spec"]["containers"]
    return {item["name"]: item["value"] for item in container.get("env") or []}


def _requests(server: RecordedApiServer) -> list[tuple[str, str]]:
    """The patches sent, in order: (Deployment, ``scale`` or ``template``)."""
    return [(r.path.split("/")[7], "scale" if r.path.endswith("/scale") else "template")
            for r in server.requests if r.method == "PATCH"]




def _candidate_uri(world: CanaryWorld) -> str:
    with session_scope(world.engine) as session:
        return session.exec(select(ModelVersion).where(ModelVersion.version == 2)).one().artifact_uri


def _promoted_event(world: CanaryWorld) -> AuditEvent:
    with session_scope(world.engine) as session:
        return session.exec(select(AuditEvent).where(AuditEvent.kind == "canary.promoted")).one()


def test_the_promotion_points_production_at_the_candidate_before_the_canary_is_withdrawn(
        server, sqlite_engine, tmp_path, clock):
    world = _world(server, sqlite_engine, tmp_path, clock())
    t0 = clock()
    stable_before = server.deployments[("ml", "ranker")].template
    run = world.retrain(t0, canary={"steps": [0.25], "bake": "1h"})
    assert run.state == "succeeded", run.message
    uri = _candidate_uri(world)
    # the canary's pods serve the candidate from their first start: its pod template first, then its scale
    assert _requests(server) == [("ranker-canary", "template"), ("ranker-canary", "scale")]
    assert _env(server, "ranker-canary") == {VERSION_ENV: "2", ARTIFACT_ENV: uri}
    canary_template = server.deployments[("ml", "ranker-canary")].template
    assert canary_template["metadata"]["annotations"][VERSION_ANNOTATION] == "2"
    assert canary_template["spec"]["containers"][0]["image"] == stable_before["spec"]["containers"][0]["image"]
    assert server.deployments[("ml", "ranker")].template == stable_before  # production untouched so far
    patch = next(r for r in server.requests if r.method == "PATCH")
    assert patch.headers["content-type"].startswith("application/strategic-merge-patch+json")

    canary_scores(world, t0 + HOUR, 0.95)
    world.verify(t0 + HOUR)
    (move,) = advance(world, t0 + HOUR).moves
    assert move.move == "promoted", move.detail
    # production's pod template names the candidate, and was changed before the canary went back to 0
    assert _env(server, "ranker") == {VERSION_ENV: "2", ARTIFACT_ENV: uri}
    assert _requests(server)[2:] == [("ranker", "template"), ("ranker-canary", "scale")]
    stable = server.deployments[("ml", "ranker")]
    assert (stable.replicas, stable.generation) == (3, 4)  # a new pod template; the replica count as it was
    assert stable.template["spec"]["containers"][0]["args"] == stable_before["spec"]["containers"][0]["args"]
    assert server.deployments[("ml", "ranker-canary")].replicas == 0
    assert "Kubernetes deployment ml/ranker serves version 2 (3 pod(s) replaced; 3 of 3 replicas ready)" in move.detail
    event = _promoted_event(world)
    assert event.payload["production_serving"]["pod_template"] == "patch"
    assert event.payload["production_serving"]["replaced"] == 3
    with session_scope(world.engine) as session:
        assert registry.production_version(session, world.model_id).version == 2

    # the next promotion's patch would change nothing: the same reference sends no second patch
    assert advance(world, t0 + 2 * HOUR).moves == []
    assert len(_requests(server)) == 4


def test_a_transient_failure_of_the_production_patch_is_retried_and_production_stays_on_the_old_version(
        server, sqlite_engine, tmp_path, clock):
    world = _world(server, sqlite_engine, tmp_path, clock())
    t0 = clock()
    run = world.retrain(t0, canary={"steps": [0.25], "bake": "1h"})
    canary_scores(world, t0 + HOUR, 0.95)
    world.verify(t0 + HOUR)
    server.fail(503, method="PATCH", resource="deployment")
    (move,) = advance(world, t0 + HOUR).moves
    assert move.move == "retrying" and "503" in move.detail
    assert VERSION_ENV not in _env(server, "ranker")
    with session_scope(world.engine) as session:
        assert registry.production_version(session, world.model_id).version == 1
        assert canary_of_run(session, run.id).state == "running"
    assert server.deployments[("ml", "ranker-canary")].replicas == 1  # the canary keeps serving meanwhile

    (move,) = advance(world, t0 + HOUR + HOUR / 4).moves
    assert move.move == "promoted"
    assert _env(server, "ranker")[VERSION_ENV] == "2"


def test_a_rollout_that_lags_is_waited_for_then_recorded_as_it_stands(server, sqlite_engine, tmp_path, clock):
    server.deployments[("ml", "ranker")].observed_generation = 3  # the Deployment controller will not catch up
    world = _world(server, sqlite_engine, tmp_path, clock(), rollout_timeout="1s")
    t0 = clock()
    world.retrain(t0, canary={"steps": [0.5], "bake": "1h"})
    canary_scores(world, t0 + HOUR, 0.95)
    world.verify(t0 + HOUR)
    (move,) = advance(world, t0 + HOUR).moves
    assert move.move == "promoted"
    reads = [r for r in server.requests if r.method == "GET" and r.path.endswith("/deployments/ranker")]
    assert len(reads) >= 3  # the pod template, then the rollout, read again until rollout_timeout
    assert "the Deployment controller has not yet acted on the latest change" in move.detail
    assert _env(server, "ranker")[VERSION_ENV] == "2"


def test_with_a_delivery_pipeline_mape_sends_no_pod_template_patch_and_says_so(server, sqlite_engine, tmp_path, clock):
    world = _world(server, sqlite_engine, tmp_path, clock(), promote="pipeline")
    t0 = clock()
    world.retrain(t0, canary={"steps": [0.25], "bake": "1h"})
    canary_scores(world, t0 + HOUR, 0.95)
    world.verify(t0 + HOUR)
    (move,) = advance(world, t0 + HOUR).moves
    assert move.move == "promoted"
    assert _requests(server) == [("ranker-canary", "scale"), ("ranker-canary", "scale")]
    assert VERSION_ENV not in _env(server, "ranker") and VERSION_ENV not in _env(server, "ranker-canary")
    assert "is the delivery pipeline's (serving.kubernetes.promote: pipeline)" in move.detail
    assert _promoted_event(world).payload["production_serving"]["pod_template"] == "pipeline"


def test_a_container_that_the_pod_template_lacks_fails_the_retrain_and_names_it(server, sqlite_engine, tmp_path, clock):
    world = _world(server, sqlite_engine, tmp_path, clock(), container="predictor")
    run = world.retrain(clock(), canary={"steps": [0.5], "bake": "1h"})
    assert run.state == "failed" and run.attempts == 1  # permanent: the configuration must change
    assert "no container 'predictor'" in run.message and "model-server" in run.message
    assert "serving.kubernetes.container" in run.message
    assert _requests(server) == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("promote", "sometimes", "Input should be 'patch' or 'pipeline'"),
    ("container", "Model_Server", "String should match pattern"),
    ("rollout_timeout", "soon", "is not a duration"),
])
def test_the_pod_template_options_are_checked_field_by_field(tmp_path, field, value, message):
    from pydantic import ValidationError

    from mape.config import ModelConfig
    from tests.execute.canary_world import model_settings

    serving = {"target": "kubernetes", "kubernetes": {"deployment": "ranker", field: value}}
    with pytest.raises(ValidationError) as error:
        ModelConfig.model_validate(model_settings(tmp_path, serving=serving))
    (problem,) = error.value.errors()
    assert problem["loc"] == ("serving", "kubernetes", field) and message in str(error.value)


def test_canary_pods_no_canary_owns_are_scaled_to_zero_once_the_run_fails_for_good(
        server, sqlite_engine, tmp_path, clock):
    server.deployments[("ml", "ranker-canary")].replicas = 2  # left by a lost attempt of the run
    world = _world(server, sqlite_engine, tmp_path, clock())
    later = clock() + 30 * 24 * HOUR  # no labelled data in the window then: every attempt fails
    run = world.retrain(later, canary={"steps": [0.25], "bake": "1h"})
    for attempt in (1, 2):
        assert run.state == "pending" and server.deployments[("ml", "ranker-canary")].replicas == 2
        run = world.executor.run(run.id, later + attempt * HOUR)
    assert run.state == "failed" and run.result["canary_replicas"]["withdrawn"] == 2
    assert server.deployments[("ml", "ranker-canary")].replicas == 0
    assert _requests(server) == [("ranker-canary", "scale")]
    assert server.deployments[("ml", "ranker")].replicas == 3 and VERSION_ENV not in _env(server, "ranker")
    with session_scope(world.engine) as session:
        (event,) = session.exec(select(AuditEvent).where(AuditEvent.kind == "canary.orphans_withdrawn")).all()
    assert event.payload["target"] == "Kubernetes deployment ml/ranker-canary"
