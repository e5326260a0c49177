"""A small managed system for the canary tests: a labelled inference log, version 1 in production, a policy.

Who uses it: ``tests/execute/test_canary_*.py``. Everything is real: the log
and the labels are Parquet files the sources read, version 1 is a fitted
classifier stored as training stores artifacts, the ``retrain`` effector runs
through the executor, and the policy that decides it is stored as a policy
version with ``verify`` (the canary's steps are judged by it). Version 1 is
trained on labels mostly flipped, so a retrained candidate clearly passes the
champion/challenger gate.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sqlalchemy.engine import Engine

from knowledge import queries, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, Decision
from mape.config import ModelConfig
from mape.data.artifacts import save_artifact
import mape.execute.actions  # noqa: F401 - registers the built-in actions on the default registry
from mape.execute.canary import CanaryRollout
from mape.execute.executor import Executor
from mape.execute.registry import default_registry
from mape.execute.training import TrainingRequest
from mape.plan.verification import Verifier
from tests.plan.helpers import make_policy, observe

FEATURES = ["income", "debt"]
HOUR = timedelta(hours=1)
#: The verify of the canary tests' policy: the candidate's accuracy within 10 points of its accuracy at the gate.
EXPECT = "performance.accuracy >= baseline.accuracy - 0.1"


def train(request: TrainingRequest) -> LogisticRegression:
    """The training entrypoint of the canary tests' model (``tests.execute.canary_world:train``)."""
    return LogisticRegression().fit(request.data[FEATURES], request.data["label"])


def rows(n: int, start: datetime, rng: np.random.Generator, *, first_id: int) -> pd.DataFrame:
    """``n`` requests spread over the hour after ``start``, with their true labels."""
    frame = pd.DataFrame({"income": rng.normal(50, 10, n), "debt": rng.normal(20, 5, n)})
    frame["label"] = (frame["income"] - 2 * frame["debt"] + rng.normal(0, 3, n) > 10).astype(int)
    frame.insert(0, "timestamp", pd.to_datetime(start) + pd.to_timedelta(np.sort(rng.uniform(0, 3599, n)), unit="s"))
    frame.insert(0, "request_id", np.arange(first_id, first_id + n))
    return frame


@dataclass
class CanaryWorld:
    """Model ``ranker``: its log and labels under ``directory``, version 1 in production, an executor."""

    directory: Path
    engine: Engine
    config: ModelConfig
    executor: Executor
    model_id: int
    start: datetime
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(11))
    next_id: int = 0
    part: int = 0

    def log(self, frame: pd.DataFrame, predictions: Any, version: int) -> None:
        """Append requests, what ``version`` predicted for them, and their labels (arriving 10 minutes later)."""
        self.part += 1
        log = frame[["request_id", "timestamp", *FEATURES]].assign(prediction=np.asarray(predictions, dtype=int),
                                                                   model_version=version)
        log.to_parquet(self.directory / "inference" / f"part-{self.part:04d}.parquet")
        labels = frame[["request_id", "label"]].assign(labelled_at=frame["timestamp"] + pd.Timedelta(minutes=10))
        labels.to_parquet(self.directory / "labels" / f"part-{self.part:04d}.parquet")

    def requests(self, n: int, start: datetime) -> pd.DataFrame:
        frame = rows(n, start, self.rng, first_id=self.next_id)
        self.next_id += n
        return frame

    def retrain(self, at: datetime, *, canary: dict[str, Any] | None, policy: str = "retrain-canary",
                verify: dict[str, Any] | None = None) -> ActionRun:
        """A policy's retrain decision at ``at``, dispatched and run by the executor; the run as it ended."""
        params: dict[str, Any] = {"window": "6h", "min_train_rows": 100}
        if canary is not None:
            params["canary"] = canary
        loaded = make_policy(policy, when="true", params=params,
                             verify=verify or {"expect": EXPECT, "within": "3h"})
        with session_scope(self.engine) as session:
            version = queries.record_policy_version(session, name=loaded.name, text=loaded.text)
        return self.act(Decision(model_id=self.model_id, policy_name=policy, policy_sha256=version.sha256,
                                 action="retrain", params=params, status="proposed", created_at=at, tick_at=at,
                                 dedup_key=f"{at.isoformat()}/ranker/{policy}"), at)

    def act(self, decision: Decision, at: datetime) -> ActionRun:
        """Store ``decision``, dispatch and run what is ready at ``at`` as the executor does; the run as it ended."""
        with session_scope(self.engine) as session:
            session.add(decision)
        with session_scope(self.engine) as session:
            self.executor.dispatch(session, at)
            ready = self.executor.runnable(session, at)
        for run_id in ready:
            self.executor.run(run_id, at)
        with session_scope(self.engine) as session:
            return [r for r in queries.action_runs(session, model_id=self.model_id)
                    if r.action == decision.action][-1]

    def verify(self, at: datetime) -> Any:
        """One verification pass, by a fresh verifier (as a restarted controller would)."""
        with session_scope(self.engine) as session:
            return Verifier(actor="test").verify(session, at)


def model_settings(directory: Path, *, serving: dict[str, Any] | None,
                   version_column: str | None = "model_version") -> dict[str, Any]:
    """Model ``ranker`` as ``mape.yaml`` describes it, its log and labels under ``directory``."""
    return {
        "name": "ranker", "features": {"numeric": FEATURES},
        "inference": {"kind": "parquet", "path": str(directory / "inference"), "timestamp_column": "timestamp",
                      "id_column": "request_id"},
        "labels_source": {"kind": "parquet", "path": str(directory / "labels"), "timestamp_column": "labelled_at",
                          "id_column": "request_id"},
        "prediction_column": "prediction", "version_column": version_column, "label_column": "label",
        "training": {"entrypoint": "tests.execute.canary_world:train"},
        "performance": {"window": "1h", "min_samples": 50},
        "promotion": {"evaluation_window": "1h", "margin": 0.02, "min_samples": 50},
        "serving": serving,
    }


def make_world(engine: Engine, directory: Path, start: datetime, *, serving: dict[str, Any] | None,
               version_column: str | None = "model_version") -> CanaryWorld:
    """Six hours of served history before ``start``, version 1 (a poor model) in production since then."""
    for sub in ("inference", "labels", "artifacts", "serving"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    config = ModelConfig.model_validate(model_settings(directory, serving=serving, version_column=version_column))
    executor = Executor(engine, default_registry, models={"ranker": config}, artifacts_dir=directory / "artifacts",
                        serving_dir=directory / "serving")
    world = CanaryWorld(directory, engine, config, executor, model_id=0, start=start)
    history = world.requests(1200, start - 6 * HOUR)
    history["timestamp"] = start - 6 * HOUR + (history["timestamp"] - history["timestamp"].min()) * 5.9
    flipped = history.head(80).assign(label=lambda f: 1 - f["label"])  # version 1 learnt mostly wrong labels
    poor = LogisticRegression().fit(flipped[FEATURES], flipped["label"])
    uri = save_artifact(poor, directory / "artifacts" / "ranker" / "v1")
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="ranker")
        v1 = registry.register_version(session, model_id=model.id, artifact_uri=uri,
                                       metrics={"accuracy": float(poor.score(history[FEATURES], history["label"]))},
                                       training_window=(start - 6 * HOUR, start))
        registry.promote(session, v1, actor="test", at=start - 6 * HOUR)
        world.model_id = model.id
    world.log(history, poor.predict(history[FEATURES]), 1)
    return world


def canary_scores(world: CanaryWorld, at: datetime, accuracy: float, *, model: str = "ranker",
                  version: int = 2) -> None:
    """The Monitor's scores of the canary's candidate at ``at``, written as it would (for targets with no real pods)."""
    with session_scope(world.engine) as session:
        row = registry.get_model(session, model)
        observe(session, row, at, canary__accuracy=accuracy, canary__n_labelled=200.0, canary__version=float(version))


def advance(world: CanaryWorld, at: datetime, *, model: str = "ranker") -> Any:
    """One pass of the controller's canary stage over ``world``'s model at ``at``."""
    rollout = CanaryRollout(world.engine, models={model: world.config}, serving_dir=world.directory / "serving")
    return rollout.advance(at)


def predict(endpoint: str, frame: pd.DataFrame) -> list[int]:
    """What the model server at ``endpoint`` predicts for the rows (over HTTP, as clients ask it)."""
    body = json.dumps({"rows": frame[FEATURES].to_dict(orient="records")}).encode()
    request = urllib.request.Request(f"{endpoint}/predict", data=body, headers={"Content-Type": "application/json"},
                                     method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return [int(p) for p in json.loads(response.read())["predictions"]]
