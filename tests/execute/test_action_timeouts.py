"""An attempt past its action type's timeout is interrupted where it runs, ends ``timed_out`` and writes nothing."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from sqlmodel import select

from knowledge import registry
from knowledge.database import session_scope
from knowledge.tables import AuditEvent, Decision, ModelVersion
from mape.config import ModelConfig
from mape.execute.executor import Executor
from mape.execute.registry import ActionRegistry, action


class Params(BaseModel):
    seconds: float


def test_an_attempt_past_its_timeout_is_interrupted_and_timed_out_with_nothing_written(engine, clock, tmp_path: Path):
    actions = ActionRegistry()

    @action("slow", params=Params, retries=3, timeout=timedelta(seconds=0.3), registry=actions)
    def slow(ctx, params: Params) -> dict:
        """Registers a version, then works longer than its timeout allows."""
        registry.register_version(ctx.session, model_id=ctx.model.id, artifact_uri="file:///slow",
                                  created_by_action_run_id=ctx.run.id)
        time.sleep(params.seconds)
        return {}

    source = {"kind": "parquet", "path": "/nonexistent"}
    config = ModelConfig(name="m", features={"numeric": ["x"]}, inference=source, labels_source=source,
                         training={"entrypoint": "examples.credit.model:train"})
    with session_scope(engine) as session:
        model_id = registry.upsert_model(session, name="m").id
        session.add(Decision(model_id=model_id, policy_name="p", action="slow", params={"seconds": 5.0},
                             status="proposed", dedup_key="k", created_at=clock()))
    executor = Executor(engine, actions, models={"m": config}, artifacts_dir=tmp_path)
    with session_scope(engine) as session:
        (run,) = executor.dispatch(session, clock())
    began = time.monotonic()
    ended = executor.run(run.id, clock())
    assert time.monotonic() - began < 3
    assert ended is not None and ended.state == "timed_out" and "interrupted after 0.3s" in ended.message
    with session_scope(engine) as session:
        assert session.exec(select(ModelVersion)).all() == []
        assert [e.kind for e in session.exec(select(AuditEvent).where(AuditEvent.kind == "action.timed_out"))] == \
            ["action.timed_out"]
