"""Model artifacts in a local directory, a file:// URI or any fsspec store (memory:// here, a real fsspec filesystem)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import fsspec
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from mape.data.artifacts import join_location, load_artifact, save_artifact
from mape.errors import PermanentActionError


def fitted() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def test_local_and_file_uri_round_trip(tmp_path: Path):
    model = fitted()
    uri = save_artifact(model, tmp_path / "a" / "run-1")
    assert uri.startswith("file://") and (tmp_path / "a" / "run-1" / "model.joblib").exists()
    again = save_artifact(model, f"file://{tmp_path / 'b'}")
    X = np.eye(3)
    assert (load_artifact(uri).predict(X) == model.predict(X)).all()
    assert (load_artifact(again).predict(X) == model.predict(X)).all()


def test_an_fsspec_store_round_trip_and_clear_errors():
    model = fitted()
    location = join_location("memory://mape-test-artifacts/", "churn", "run-7")
    assert location == "memory://mape-test-artifacts/churn/run-7"
    uri = save_artifact(model, location)
    assert uri == location
    assert fsspec.filesystem("memory").exists("/mape-test-artifacts/churn/run-7/model.joblib")
    assert (load_artifact(uri).predict(np.eye(3)) == model.predict(np.eye(3))).all()
    with pytest.raises(PermanentActionError, match="model artifact not found at memory://mape-test-artifacts/nope"):
        load_artifact("memory://mape-test-artifacts/nope")
    with pytest.raises(PermanentActionError, match="artifact store nosuchproto://x"):
        save_artifact(model, "nosuchproto://x")


def test_settings_validate_the_artifacts_uri(tmp_path: Path):
    from mape.config import Settings

    assert Settings(artifacts_uri="s3://bucket/mape").artifacts_uri == "s3://bucket/mape"
    with pytest.raises(ValueError, match="artifacts_uri"):
        Settings(artifacts_uri="bucket/mape")


def test_a_retrain_writes_its_candidate_to_the_configured_store(tmp_path: Path):
    from examples.credit.demo import MODEL, Scenario, write_config
    from examples.credit.serving import CreditServing
    from knowledge import registry
    from knowledge.database import session_scope
    from mape.config import load_settings
    from mape.controller import Controller

    policies = tmp_path / "policies"
    policies.mkdir()
    config = write_config(tmp_path, policies)
    data = yaml.safe_load(config.read_text())
    data["artifacts_uri"] = "memory://mape-retrain-store"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    controller = Controller(load_settings(config))
    scenario = Scenario(rows_per_hour=300)
    serving = CreditServing(tmp_path / "data", controller.engine, MODEL, rows_per_hour=300)
    history = serving.requests(scenario.at(0) - timedelta(hours=6), drifted=False, hours=6)
    history.drop(columns=["label"]).assign(prediction=0, model_version=0).to_parquet(
        tmp_path / "data" / "inference" / "legacy.parquet", index=False)
    history[["request_id", "timestamp", "label"]].rename(columns={"timestamp": "labelled_at"}).to_parquet(
        tmp_path / "data" / "labels" / "legacy.parquet", index=False)
    controller.request_action(MODEL, "retrain", params={"window": "6h"}, actor="alice", reason="first version",
                              at=scenario.at(0))
    (run,) = controller.tick(scenario.at(0)).actions
    assert run.state == "succeeded", run
    with session_scope(controller.engine) as session:
        production = registry.production_version(session, registry.get_model(session, MODEL).id)
    assert production.artifact_uri == f"memory://mape-retrain-store/{MODEL}/run-{run.id}"
    assert hasattr(load_artifact(production.artifact_uri), "predict")
