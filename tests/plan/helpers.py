"""Helpers of the Plan stage's tests: policy texts, loaded policies, and knowledge-base rows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session

from knowledge import queries, registry
from knowledge.tables import ActionRun, Decision, ManagedModel, Observation, Symptom
from mape.config import ModelConfig
from mape.execute.executor import Executor
from mape.execute.registry import ActionRegistry, action
from mape.plan import LoadedPolicy, load_policy_text

KNOWN_ACTIONS = frozenset({"retrain", "rollback", "rescale", "notify"})


def policy_document(name: str = "p", *, when: str = "true", action: str = "retrain",
                    params: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A valid policy document; ``spec`` keys override or add fields of ``spec``."""
    action_spec: dict[str, Any] = {"type": action} if params is None else {"type": action, "params": params}
    return {
        "apiVersion": "mape/v1",
        "kind": "Policy",
        "metadata": {"name": name},
        "spec": {"when": when, "action": action_spec, **spec},
    }


def policy_text(name: str = "p", **kwargs: Any) -> str:
    return yaml.safe_dump(policy_document(name, **kwargs), sort_keys=False)


def make_policy(name: str = "p", *, known_actions: frozenset[str] = KNOWN_ACTIONS, **kwargs: Any) -> LoadedPolicy:
    return load_policy_text(policy_text(name, **kwargs), f"{name}.yaml", known_actions=known_actions)


def add_model(session: Session, name: str = "m", **labels: str) -> ManagedModel:
    return registry.upsert_model(session, name=name, labels=labels, training_entrypoint="pkg.mod:train")


def observe(session: Session, model: ManagedModel, at: datetime, **metrics: float | None) -> None:
    """Summary observations named like ``drift__share_drifted`` → ``drift.share_drifted``."""
    assert model.id is not None
    queries.add_observations(session, [
        Observation(time=at, model_id=model.id, sensor="test", metric=key.replace("__", "."), value=value)
        for key, value in metrics.items()
    ])


def open_symptom(session: Session, model: ManagedModel, kind: str, at: datetime, *, severity: str = "warning",
                 last_seen_at: datetime | None = None) -> Symptom:
    assert model.id is not None
    symptom = Symptom(model_id=model.id, kind=kind, severity=severity, opened_at=at, last_seen_at=last_seen_at or at)
    session.add(symptom)
    session.flush()
    return symptom


def running_action(session: Session, model: ManagedModel, at: datetime, *, action: str = "retrain",
                   state: str = "running") -> ActionRun:
    """An action run in ``state``, with the (earlier) decision it came from."""
    assert model.id is not None
    decision = Decision(created_at=at, tick_at=at, model_id=model.id, policy_name="earlier", action=action,
                        status="approved", dedup_key=f"{model.name}/earlier/{at.isoformat()}")
    session.add(decision)
    session.flush()
    assert decision.id is not None
    run = ActionRun(decision_id=decision.id, model_id=model.id, action=action, state=state,
                    idempotency_key=f"run-{decision.id}")
    session.add(run)
    session.flush()
    return run


class NoParams(BaseModel):
    """The recording action takes no parameters."""


def recording_executor(engine: Engine, artifacts_dir: Path, model: str = "m") -> Executor:
    """An executor for one model whose only action, ``retrain``, records the tick time it ran at (no training)."""
    actions = ActionRegistry()

    @action("retrain", params=NoParams, registry=actions)
    def retrain(ctx: Any, params: NoParams) -> dict[str, Any]:
        """Records that it ran."""
        return {"ran_at": ctx.at.isoformat()}

    source = {"kind": "parquet", "path": "/nonexistent"}
    config = ModelConfig(name=model, features={"numeric": ["x"]}, inference=source, labels_source=source,
                         training={"entrypoint": "examples.credit.model:train"})
    return Executor(engine, actions, models={model: config}, artifacts_dir=artifacts_dir)
