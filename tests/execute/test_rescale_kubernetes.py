"""The ``rescale`` effector scales a Kubernetes Deployment within the model's bounds, and the Monitor reads it.

The Deployment lives in a recorded API server on loopback
(:mod:`tests.serving.fake_apiserver`), reached through the official client
exactly as a cluster would be; see ``tests/serving/test_kubernetes_deployment.py``
for the target on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision
from mape.config import ModelConfig
import mape.execute.actions  # noqa: F401 - registers the built-in actions on the default registry
from mape.execute.executor import Executor
from mape.execute.registry import default_registry
from mape.monitor.stage import Monitor
from tests.serving.fake_apiserver import RecordedApiServer

pytest.importorskip("kubernetes")

TOKEN_ENV = "MAPE_TEST_K8S_TOKEN"


def _config(name: str, api_server: str) -> ModelConfig:
    source = {"kind": "parquet", "path": "/nonexistent"}
    return ModelConfig(
        name=name, features={"numeric": ["income", "debt"]}, inference=source, labels_source=source,
        training={"entrypoint": "examples.credit.model:train"},
        serving={"target": "kubernetes",
                 "replicas": {"min_replicas": 1, "max_replicas": 4, "max_step": 1, "scale_down_stabilization": "10m"},
                 "kubernetes": {"namespace": "ml", "deployment": name, "api_server": api_server,
                                "token_env": TOKEN_ENV, "request_timeout": "2s",
                                "endpoint": f"http://{name}.ml.svc:8080"}})


@pytest.fixture
def cluster(engine, tmp_path: Path, clock, monkeypatch) -> Iterator[tuple[RecordedApiServer, Executor, int,
                                                                          ModelConfig]]:
    """Model ``ranker`` in production, served by Deployment ``ml/ranker`` at 2 replicas; bounds 1..4, step 1, 10 min."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with RecordedApiServer() as server:
        server.add("ml", "ranker", replicas=2)
        assert server.token is not None
        monkeypatch.setenv(TOKEN_ENV, server.token)
        with session_scope(engine) as session:
            model = registry.upsert_model(session, name="ranker")
            version = registry.register_version(session, model_id=model.id, artifact_uri="file:///models/ranker/v1",
                                                metrics={"accuracy": 0.9})
            registry.promote(session, version, actor="test", at=clock() - timedelta(days=1))
            model_id = model.id
        config = _config("ranker", server.url)
        executor = Executor(engine, default_registry, models={"ranker": config}, artifacts_dir=tmp_path / "artifacts",
                            serving_dir=tmp_path / "serving")
        yield server, executor, model_id, config


def _decide(engine, executor: Executor, model_id: int, at: datetime, params: dict[str, Any], key: str) -> None:
    with session_scope(engine) as session:
        session.add(Decision(model_id=model_id, policy_name="load", action="rescale", params=params,
                             status="proposed", dedup_key=key, created_at=at))
    with session_scope(engine) as session:
        executor.dispatch(session, at)


def _run_due(engine, executor: Executor, model_id: int, at: datetime) -> ActionRun:
    with session_scope(engine) as session:
        ready = executor.runnable(session, at)
    for run_id in ready:
        executor.run(run_id, at)
    with session_scope(engine) as session:
        return [r for r in queries.action_runs(session, model_id=model_id) if r.action == "rescale"][-1]


def _rescale(engine, executor: Executor, model_id: int, at: datetime, params: dict[str, Any], key: str) -> ActionRun:
    _decide(engine, executor, model_id, at, params, key)
    return _run_due(engine, executor, model_id, at)


def test_rescale_patches_the_deployment_within_min_max_step_and_the_stabilization_window(engine, cluster, clock):
    server, executor, model_id, config = cluster
    state = server.deployments[("ml", "ranker")]
    t0 = clock()

    # asked for 9: max_replicas allows 4, max_step lets one more start
    run = _rescale(engine, executor, model_id, t0, {"replicas": 9}, "up-1")
    assert run.state == "succeeded", run.message
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (2, 3, "max_step")
    assert (run.result["ready"], run.result["endpoints"]) == (3, ["http://ranker.ml.svc:8080"])
    assert run.result["health"] == "3 of 3 replicas ready"
    assert state.replicas == 3

    # the Monitor reads the Deployment: serving.replicas and serving.ready_replicas
    state.ready = 2  # one pod still starting
    monitor = Monitor([config], serving_dir=Path("/nonexistent-serving-dir"))
    with session_scope(engine) as session:
        report = monitor.run(session, {"ranker": model_id}, t0 + timedelta(minutes=1))
        latest = queries.latest_summary_metrics_fleet(session, [model_id], until=t0 + timedelta(minutes=1),
                                                      prefixes=("serving.",))[model_id]
    assert {name: row.value for name, row in latest.items()} == {"serving.replicas": 3.0,
                                                                 "serving.ready_replicas": 2.0}
    assert not [e for e in report.errors if e.sensor == "serving"]
    state.ready = None

    # a scale-down within 10 min of the scale-up is refused, succeeds as a no-op, and sends no patch
    patches_before = sum(r.method == "PATCH" for r in server.requests)
    run = _rescale(engine, executor, model_id, t0 + timedelta(minutes=5), {"by": -2}, "down-early")
    assert run.state == "succeeded"
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (3, 3, "stabilization")
    assert sum(r.method == "PATCH" for r in server.requests) == patches_before

    # after the window: one replica per step, never below min_replicas
    run = _rescale(engine, executor, model_id, t0 + timedelta(minutes=12), {"by": -2}, "down-late")
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (3, 2, "max_step")
    run = _rescale(engine, executor, model_id, t0 + timedelta(minutes=30), {"replicas": 0}, "down-floor")
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (2, 1, "min_replicas")
    run = _rescale(engine, executor, model_id, t0 + timedelta(minutes=40), {"replicas": 1}, "stay")
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (1, 1, None)
    assert state.replicas == 1
    assert [r.body for r in server.requests if r.method == "PATCH"] == [
        {"spec": {"replicas": 3}}, {"spec": {"replicas": 2}}, {"spec": {"replicas": 1}}]


def test_a_refused_patch_fails_the_run_at_once_naming_the_deployment_and_status(engine, cluster, clock):
    server, executor, model_id, _ = cluster
    server.fail(403, method="PATCH")
    run = _rescale(engine, executor, model_id, clock(), {"by": 1}, "forbidden")
    assert (run.state, run.attempts) == ("failed", 1)
    assert run.message.startswith("PermanentActionError: serving model ranker: cannot scale Kubernetes deployment "
                                  "ml/ranker: HTTP 403 Forbidden: ")
    assert "need RBAC permission to get and patch deployments/scale" in run.message
    assert server.deployments[("ml", "ranker")].replicas == 2


def test_a_wrong_token_fails_the_run_with_the_401(engine, cluster, clock, monkeypatch):
    server, executor, model_id, _ = cluster
    monkeypatch.setenv(TOKEN_ENV, "expired-token")
    run = _rescale(engine, executor, model_id, clock(), {"by": 1}, "unauthorized")
    assert run.state == "failed"
    assert (f"cannot read the scale of Kubernetes deployment ml/ranker: HTTP 401 Unauthorized; the API server at "
            f"{server.url} does not accept the token in {TOKEN_ENV}") in run.message


def test_an_overloaded_api_server_is_retried_after_a_minute_and_the_retry_scales(engine, cluster, clock):
    server, executor, model_id, _ = cluster
    t0 = clock()
    server.fail(503, method="PATCH")
    run = _rescale(engine, executor, model_id, t0, {"by": 1}, "busy")
    assert (run.state, run.attempts) == ("pending", 1)
    assert "HTTP 503 Service Unavailable" in run.message
    assert run.scheduled_for is not None and run.scheduled_for.replace(tzinfo=None) == \
        (t0 + timedelta(seconds=60)).replace(tzinfo=None)

    run = _run_due(engine, executor, model_id, t0 + timedelta(seconds=61))
    assert (run.state, run.attempts) == ("succeeded", 2)
    assert (run.result["from"], run.result["to"]) == (2, 3)
    assert server.deployments[("ml", "ranker")].replicas == 3


def test_an_unreachable_api_server_is_retried_and_says_so(engine, cluster, clock):
    server, executor, model_id, _ = cluster
    server.stop()
    run = _rescale(engine, executor, model_id, clock(), {"by": 1}, "down")
    assert run.state == "pending"
    assert f"cannot connect to the API server at {server.url}: connection refused" in run.message


def test_a_failed_health_read_after_the_patch_keeps_the_scaling_on_record(engine, cluster, clock):
    server, executor, model_id, _ = cluster
    server.fail(500, method="GET", resource="deployment")
    run = _rescale(engine, executor, model_id, clock(), {"by": 1}, "health-down")
    assert run.state == "succeeded"
    assert (run.result["from"], run.result["to"], run.result["ready"]) == (2, 3, None)
    assert "cannot read the status of Kubernetes deployment ml/ranker: HTTP 500" in run.result["health"]


def test_the_monitor_records_a_clear_error_when_the_api_server_fails(engine, cluster, clock):
    server, _, model_id, config = cluster
    server.fail(403, method="GET", resource="deployment")
    with session_scope(engine) as session:
        report = Monitor([config], serving_dir=Path("/nonexistent-serving-dir")).run(session, {"ranker": model_id},
                                                                                    clock())
    (error,) = [e for e in report.errors if e.sensor == "serving"]
    assert error.message.startswith("Serving sensor for model ranker failed: serving model ranker: cannot read the "
                                    "status of Kubernetes deployment ml/ranker: HTTP 403 Forbidden")
