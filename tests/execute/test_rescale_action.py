"""The ``rescale`` effector scales real model-server replicas within the model's bounds, and the Monitor sees them."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision
from mape.config import ModelConfig
from mape.data.artifacts import save_artifact
import mape.execute.actions  # noqa: F401 - registers the built-in actions on the default registry
from mape.execute.executor import Executor
from mape.execute.registry import default_registry
from mape.monitor.stage import Monitor
from mape.serving.factory import target_for

PORTS = (39000, 39099)  # apart from the serving tests' range and the default one


def _config(name: str, *, serving: dict[str, Any] | None) -> ModelConfig:
    source = {"kind": "parquet", "path": "/nonexistent"}
    return ModelConfig(name=name, features={"numeric": ["income", "debt"]}, inference=source, labels_source=source,
                       training={"entrypoint": "examples.credit.model:train"}, serving=serving)


@pytest.fixture
def served(engine, tmp_path: Path, clock):
    """A model with a production version (a real fitted classifier) and serving bounds 1..3, step 1, 10 min."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"income": rng.normal(50, 10, 60), "debt": rng.normal(20, 5, 60)})
    estimator = LogisticRegression().fit(frame, (frame["income"] - 2 * frame["debt"] > 10).astype(int))
    uri = save_artifact(estimator, tmp_path / "artifacts" / "ranker" / "v1")
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="ranker")
        version = registry.register_version(session, model_id=model.id, artifact_uri=uri, metrics={"accuracy": 0.9})
        registry.promote(session, version, actor="test", at=clock() - timedelta(days=1))
        plain = registry.upsert_model(session, name="plain")
        ids = {"ranker": model.id, "plain": plain.id}
    config = _config("ranker", serving={"replicas": {"min_replicas": 1, "max_replicas": 3, "max_step": 1,
                                                     "scale_down_stabilization": "10m"},
                                        "local": {"port_range": list(PORTS), "startup_timeout": "30s"}})
    serving_dir = tmp_path / "serving"
    executor = Executor(engine, default_registry, models={"ranker": config, "plain": _config("plain", serving=None)},
                        artifacts_dir=tmp_path / "artifacts", serving_dir=serving_dir)
    yield executor, ids, config, serving_dir, frame
    target = target_for(config, serving_dir)
    assert target is not None
    target.stop_all()  # type: ignore[attr-defined]
    assert target.replicas() == 0


def _rescale(engine, executor: Executor, model_id: int, at: datetime, params: dict[str, Any], key: str) -> ActionRun:
    with session_scope(engine) as session:
        session.add(Decision(model_id=model_id, policy_name="gpu", action="rescale", params=params,
                             status="proposed", dedup_key=key, created_at=at))
    with session_scope(engine) as session:
        executor.dispatch(session, at)
        ready = executor.runnable(session, at)
    for run_id in ready:
        executor.run(run_id, at)
    with session_scope(engine) as session:
        return [r for r in queries.action_runs(session, model_id=model_id) if r.action == "rescale"][-1]


def _predict(endpoint: str, rows: list[dict[str, float]]) -> list[Any]:
    request = urllib.request.Request(f"{endpoint}/predict", data=json.dumps({"rows": rows}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())["predictions"]


def test_scaling_up_starts_replicas_that_serve_the_production_version_within_the_bounds(engine, served, clock):
    executor, ids, config, serving_dir, frame = served
    t0 = clock()
    run = _rescale(engine, executor, ids["ranker"], t0, {"by": 1}, "up-1")
    assert run.state == "succeeded", run.message
    assert (run.result["from"], run.result["to"], run.result["ready"]) == (0, 1, 1)
    rows = frame.head(5).to_dict(orient="records")
    assert len(_predict(run.result["endpoints"][0], rows)) == 5

    # asked for 3 at once: max_step lets one more start
    run = _rescale(engine, executor, ids["ranker"], t0 + timedelta(minutes=1), {"replicas": 3}, "up-2")
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (1, 2, "max_step")
    assert run.result["ready"] == 2 and len(set(run.result["endpoints"])) == 2

    # the Monitor reads what runs: serving.replicas and serving.ready_replicas
    monitor = Monitor([config], serving_dir=serving_dir)
    with session_scope(engine) as session:
        report = monitor.run(session, {"ranker": ids["ranker"]}, t0 + timedelta(minutes=2))
        latest = queries.latest_summary_metrics_fleet(session, [ids["ranker"]], until=t0 + timedelta(minutes=2),
                                                      prefixes=("serving.",))[ids["ranker"]]
    assert {name: row.value for name, row in latest.items()} == {"serving.replicas": 2.0,
                                                                 "serving.ready_replicas": 2.0}
    assert not [e for e in report.errors if e.sensor == "serving"]

    # a scale-down inside the 10 min stabilization window after the scale-up is refused, and succeeds as a no-op
    run = _rescale(engine, executor, ids["ranker"], t0 + timedelta(minutes=5), {"by": -1}, "down-early")
    assert run.state == "succeeded"
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (2, 2, "stabilization")
    assert "allowed from" in run.result["reason"]

    # after the window it stops one replica, newest first, and never goes below min_replicas
    run = _rescale(engine, executor, ids["ranker"], t0 + timedelta(minutes=12), {"by": -1}, "down-late")
    assert (run.result["from"], run.result["to"]) == (2, 1)
    run = _rescale(engine, executor, ids["ranker"], t0 + timedelta(minutes=40), {"by": -1}, "down-floor")
    assert (run.result["from"], run.result["to"], run.result["limited_by"]) == (1, 1, "min_replicas")


def test_a_model_without_a_serving_section_fails_permanently_naming_it(engine, served, clock):
    executor, ids, *_ = served
    run = _rescale(engine, executor, ids["plain"], clock(), {"by": 1}, "plain-up")
    assert run.state == "failed"
    assert "model plain has no serving configuration" in run.message
