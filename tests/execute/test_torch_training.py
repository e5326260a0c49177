"""The torch MLP example retrains through the real retrain action, and its artifact serves like any other."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import yaml

from mape.data.artifacts import load_artifact


def test_a_torch_mlp_is_trained_promoted_and_reloaded_from_its_artifact(tmp_path: Path):
    from examples.credit.demo import FEATURES, MODEL, Scenario, write_config
    from examples.credit.serving import CreditServing
    from knowledge import registry
    from knowledge.database import session_scope
    from mape.config import load_settings
    from mape.controller import Controller

    policies = tmp_path / "policies"
    policies.mkdir()
    config = write_config(tmp_path, policies)
    data = yaml.safe_load(config.read_text())
    data["models"][0]["training"] = {"entrypoint": "examples.credit.torch_model:train",
                                     "params": {"hidden": 16, "epochs": 150}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    controller = Controller(load_settings(config))
    scenario = Scenario(rows_per_hour=300)
    serving = CreditServing(tmp_path / "data", controller.engine, MODEL, rows_per_hour=300)
    history = serving.requests(scenario.at(0) - timedelta(hours=6), drifted=False, hours=6)
    history.drop(columns=["label"]).assign(prediction=0, model_version=0).to_parquet(
        tmp_path / "data" / "inference" / "legacy.parquet", index=False)
    history[["request_id", "timestamp", "label"]].rename(columns={"timestamp": "labelled_at"}).to_parquet(
        tmp_path / "data" / "labels" / "legacy.parquet", index=False)
    controller.request_action(MODEL, "retrain", params={"window": "6h"}, actor="alice", reason="torch",
                              at=scenario.at(0))
    (run,) = controller.tick(scenario.at(0)).actions
    assert run.state == "succeeded" and run.result["promoted"] is True, run
    with session_scope(controller.engine) as session:
        production = registry.production_version(session, registry.get_model(session, MODEL).id)
    assert production.metrics["train_loss"] > 0 and production.metrics["accuracy"] > 0.8
    model = load_artifact(production.artifact_uri)
    fresh = serving.requests(scenario.at(1), drifted=False, hours=1)
    accuracy = float(np.mean(model.predict(fresh[FEATURES]) == fresh["label"]))
    assert accuracy > 0.8
    probabilities = model.predict_proba(fresh[FEATURES])
    assert probabilities.shape == (len(fresh), 2) and np.allclose(probabilities.sum(axis=1), 1)
