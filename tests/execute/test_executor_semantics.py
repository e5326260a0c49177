"""The executor runs each decision's action exactly once, retries what may pass later, and never raises."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlmodel import select

from knowledge import audit, registry
from knowledge.database import session_scope
from knowledge.tables import ActionRun, AuditEvent, Decision, ModelVersion
from mape.config import ModelConfig
from mape.errors import PermanentActionError, TransientActionError
from mape.execute.executor import Executor
from mape.execute.registry import ActionRegistry, action
from mape.execute.state import allowed


class Params(BaseModel):
    fail: str = ""  # "", "transient", "permanent", "crash"


def _model_config() -> ModelConfig:
    source = {"kind": "parquet", "path": "/nonexistent"}
    return ModelConfig(name="m", features={"numeric": ["x"]}, inference=source, labels_source=source,
                       training={"entrypoint": "examples.credit.model:train"})


@pytest.fixture
def actions() -> ActionRegistry:
    reg = ActionRegistry()

    @action("register", params=Params, retries=2, retry_delay=timedelta(minutes=1), timeout=timedelta(hours=1),
            registry=reg)
    def register(ctx, params: Params) -> dict:
        """Registers a version, then fails if asked: its write must not survive a failure."""
        version = registry.register_version(ctx.session, model_id=ctx.model.id, artifact_uri="file:///x",
                                            created_by_action_run_id=ctx.run.id)
        if params.fail == "transient":
            raise TransientActionError("the cluster is busy", delay=120)
        if params.fail == "permanent":
            raise PermanentActionError("the window has no data")
        if params.fail == "crash":
            raise ZeroDivisionError("division by zero")
        return {"version": version.version}

    return reg


@pytest.fixture
def setup(engine, actions, clock, tmp_path: Path):
    with session_scope(engine) as session:
        model = registry.upsert_model(session, name="m")
        model_id = model.id
    executor = Executor(engine, actions, models={"m": _model_config()}, artifacts_dir=tmp_path)
    return executor, model_id


def _decide(engine, model_id: int, clock, *, params: dict | None = None, action_type: str = "register",
            key: str = "k1") -> int:
    with session_scope(engine) as session:
        decision = Decision(model_id=model_id, policy_name="p", action=action_type, params=params or {},
                            status="proposed", dedup_key=key, created_at=clock())
        session.add(decision)
        session.flush()
        return decision.id


def test_a_decision_gets_one_run_however_often_dispatch_and_run_are_repeated(engine, setup, clock):
    executor, model_id = setup
    _decide(engine, model_id, clock)
    for _ in range(3):
        with session_scope(engine) as session:
            executor.dispatch(session, clock())
            ready = executor.runnable(session, clock())
        for run_id in ready:
            executor.run(run_id, clock())
            executor.run(run_id, clock())  # a duplicated flow run: not claimable any more
    with session_scope(engine) as session:
        runs = session.exec(select(ActionRun)).all()
        versions = session.exec(select(ModelVersion)).all()
    assert len(runs) == 1 and runs[0].state == "succeeded" and runs[0].attempts == 1
    assert runs[0].idempotency_key == f"mape-decision-{runs[0].decision_id}"
    assert len(versions) == 1 and versions[0].created_by_action_run_id == runs[0].id


def test_claim_is_compare_and_set(engine, setup, clock):
    executor, model_id = setup
    _decide(engine, model_id, clock)
    with session_scope(engine) as session:
        (run,) = executor.dispatch(session, clock())
    assert executor.claim(run.id, clock()) is True
    assert executor.claim(run.id, clock()) is False


def test_transient_failures_are_retried_with_backoff_then_fail_and_leave_no_partial_writes(engine, setup, clock):
    executor, model_id = setup
    _decide(engine, model_id, clock, params={"fail": "transient"})
    with session_scope(engine) as session:
        (run,) = executor.dispatch(session, clock())
    states = []
    for _ in range(5):
        with session_scope(engine) as session:
            ready = executor.runnable(session, clock())
        for run_id in ready:
            states.append(executor.run(run_id, clock()).state)
        clock.advance(timedelta(minutes=1))
    # not runnable again until its delay of 120 s has passed: 3 attempts over 5 minutes
    assert states == ["pending", "pending", "failed"]
    with session_scope(engine) as session:
        final = session.get(ActionRun, run.id)
        assert final.attempts == 3 and "the cluster is busy" in final.message
        assert session.exec(select(ModelVersion)).all() == []  # each attempt's write was rolled back
        kinds = [e.kind for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    assert kinds.count("action.retrying") == 2 and kinds[-1] == "action.failed"


def test_permanent_failure_is_not_retried_and_a_crash_is_retried(engine, setup, clock):
    executor, model_id = setup
    _decide(engine, model_id, clock, params={"fail": "permanent"}, key="a")
    _decide(engine, model_id, clock, params={"fail": "crash"}, key="b")
    with session_scope(engine) as session:
        permanent, crash = executor.dispatch(session, clock())
    assert executor.run(permanent.id, clock()).state == "failed"
    result = executor.run(crash.id, clock())
    assert result.state == "pending" and "ZeroDivisionError" in result.message
    assert result.scheduled_for == clock() + timedelta(minutes=1)


def test_unknown_action_and_invalid_params_fail_at_dispatch_with_a_clear_message(engine, setup, clock):
    executor, model_id = setup
    _decide(engine, model_id, clock, action_type="reboot", key="a")
    _decide(engine, model_id, clock, params={"fail": ["not", "a", "string"]}, key="b")
    with session_scope(engine) as session:
        unknown, invalid = executor.dispatch(session, clock())
        assert executor.runnable(session, clock()) == []
    assert unknown.state == "failed" and "unknown action type 'reboot'" in unknown.message
    assert invalid.state == "failed" and "invalid parameter fail of register" in invalid.message


def test_a_run_stuck_in_running_past_its_timeout_is_timed_out(engine, setup, clock):
    executor, model_id = setup
    _decide(engine, model_id, clock)
    with session_scope(engine) as session:
        (run,) = executor.dispatch(session, clock())
    assert executor.claim(run.id, clock())  # the process that claimed it died
    clock.advance(timedelta(hours=2))
    with session_scope(engine) as session:
        executor.dispatch(session, clock())
        assert session.get(ActionRun, run.id).state == "timed_out"
        assert audit.verify_chain(session).ok


def test_state_machine_forbids_leaving_a_terminal_state():
    assert allowed("running", "succeeded")
    assert not allowed("succeeded", "running")
    assert not allowed("failed", "pending")
    assert not allowed("cancelled", "running")


def test_with_energy_metering_a_run_records_its_energy_and_emissions_at_the_models_grid_intensity(
        engine, actions, clock, tmp_path: Path):
    from knowledge import queries as kb
    from knowledge.tables import Observation

    with session_scope(engine) as session:
        model_id = registry.upsert_model(session, name="m").id
        kb.add_observations(session, [Observation(time=clock() - timedelta(minutes=5), model_id=model_id,
                                                  sensor="carbon", metric="carbon.intensity", value=400.0)])
    executor = Executor(engine, actions, models={"m": _model_config()}, artifacts_dir=tmp_path, energy_metering=True)
    _decide(engine, model_id, clock)
    with session_scope(engine) as session:
        executor.dispatch(session, clock())
        [run_id] = executor.runnable(session, clock())
    run = executor.run(run_id, clock())
    assert run is not None and run.state == "succeeded"
    assert run.energy_kwh is not None and run.energy_kwh >= 0
    assert run.emissions_kg == pytest.approx(run.energy_kwh * 400.0 / 1000.0, rel=1e-9, abs=1e-15)
