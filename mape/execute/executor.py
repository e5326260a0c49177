"""The executor: turns decisions into action runs and runs them exactly once.

Who calls it: the controller calls :meth:`Executor.dispatch` once per tick
(decisions → pending runs), and the Prefect action flow calls
:meth:`Executor.run` for each pending run.

Exactly once, by construction rather than by memory:

* a decision has at most one action run (unique ``decision_id``) and a
  repeated tick produces no new decision (the planner's dedup key);
* a run is claimed with a compare-and-set ``UPDATE ... WHERE state IN
  (pending, scheduled)``, so two executors cannot both start it;
* the effector's writes (new version, promotion) commit in the same
  transaction as the ``succeeded`` state, so a crash mid-action leaves no half
  result, and the run's state says what to do next.

Failures never escape: :class:`~mape.errors.PermanentActionError` fails the
run, :class:`~mape.errors.TransientActionError` and unexpected exceptions are
retried with backoff until the action type's ``retries`` are spent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError
from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from knowledge import audit, queries
from knowledge.database import session_scope
from knowledge.tables import ActionRun, ActionState, Decision, ManagedModel
from mape._util.timeutil import ensure_utc
from mape.config import ModelConfig, NotificationSettings
from mape.data.artifacts import Location
from mape.data.energy import measure_energy
from mape.data.sources import TableSource, open_source
from mape.errors import PermanentActionError, TransientActionError
from mape.execute.context import ActionContext
from mape.execute.registry import ActionRegistry
from mape.execute.state import transition

log = logging.getLogger(__name__)
S = ActionState


def idempotency_key(decision: Decision) -> str:
    return f"mape-decision-{decision.id}"


class Executor:
    """Dispatches and runs actions against one knowledge base.

    Parameters
    ----------
    engine : Engine
        The knowledge base.
    registry : ActionRegistry
        Known action types.
    models : dict of str to ModelConfig
        Configuration of the managed models, by name.
    artifacts_dir : Path or str
        Local directory, or an fsspec URI (``s3://bucket/mape``), under which artifacts are written.
        Root directory for artifacts.
    serving_dir : Path, optional
        State of the local serving target (default ``serving`` beside the working directory).
    energy_metering : bool, default False
        Measure each successful action's energy with codecarbon (offline) and
        record it on the run, with its emissions at the grid intensity the
        model's newest ``carbon.intensity`` observation gives (none: no emissions).
    actor : str
        Name written into audit events.
    notifications : NotificationSettings, optional
        Notification channels, for effectors that notify (default: none).
    """

    def __init__(self, engine: Engine, registry: ActionRegistry, *, models: dict[str, ModelConfig],
                 artifacts_dir: Location, actor: str = "controller",
                 source_factory: Callable[..., TableSource] = open_source,
                 notifications: NotificationSettings | None = None, serving_dir: Path = Path("serving"),
                 energy_metering: bool = False) -> None:
        self.engine = engine
        self.energy_metering = energy_metering
        self.serving_dir = serving_dir
        self.registry = registry
        self.models = models
        self.artifacts_dir = artifacts_dir
        self.actor = actor
        self.source_factory = source_factory
        self.notifications = notifications or NotificationSettings()

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, session: Session, at: datetime) -> list[ActionRun]:
        """Create a run for every decision that should act and has none; time out stale runs.

        The run is ``pending`` (runnable now), or ``scheduled`` for the
        decision's ``not_before`` when its policy defers the action.
        """
        self._time_out_stale(session, at)
        created: list[ActionRun] = []
        for decision in queries.decisions_to_dispatch(session):
            run = ActionRun(decision_id=decision.id, model_id=decision.model_id, action=decision.action,
                            params=decision.params, idempotency_key=idempotency_key(decision),
                            created_at=at, updated_at=at)
            problem = self._check(decision)
            session.add(run)
            session.flush()
            if problem is not None:
                transition(run, S.failed.value, at=at, message=problem)
                log.warning("Action run %s refused: %s", run.id, problem)
            elif decision.not_before is not None and ensure_utc(decision.not_before) > at:
                # a deferred decision: the run waits for its time (and is cancelled if its policy stops firing)
                transition(run, S.scheduled.value, at=at,
                           message=f"deferred: not before {ensure_utc(decision.not_before).isoformat()}")
                run.scheduled_for = ensure_utc(decision.not_before)
            audit.record(session, actor=self.actor, kind="action.dispatched", subject=str(run),
                         payload={"decision": decision.id, "action": decision.action, "params": decision.params,
                                  "state": run.state, "scheduled_for": run.scheduled_for.isoformat()
                                  if run.scheduled_for else None}, time=at)
            created.append(run)
        session.flush()
        return created

    def _check(self, decision: Decision) -> str | None:
        if decision.action not in self.registry:
            return f"unknown action type {decision.action!r}; known: {', '.join(self.registry.names())}"
        try:
            self.registry.get(decision.action).params.model_validate(decision.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"invalid parameter {'.'.join(map(str, first['loc']))} of {decision.action}: {first['msg']}"
        return None

    def _time_out_stale(self, session: Session, at: datetime) -> None:
        for run in session.exec(select(ActionRun).where(ActionRun.state == S.running.value)):
            spec = self.registry.get(run.action) if run.action in self.registry else None
            if spec is None or spec.timeout is None or run.started_at is None:
                continue
            if run.started_at + spec.timeout < at:
                transition(run, S.timed_out.value, at=at,
                           message=f"still running {at - run.started_at} after start; timeout {spec.timeout}")
                session.add(run)
                audit.record(session, actor=self.actor, kind="action.timed_out", subject=str(run), time=at)

    def runnable(self, session: Session, at: datetime) -> list[int]:
        """Ids of pending runs whose time has come, oldest first."""
        return list(session.exec(
            select(ActionRun.id)
            .where(col(ActionRun.state).in_([S.pending.value, S.scheduled.value]),
                   or_(col(ActionRun.scheduled_for).is_(None), col(ActionRun.scheduled_for) <= at))
            .order_by(col(ActionRun.id))
        ).all())

    # ------------------------------------------------------------------ run

    def claim(self, run_id: int, at: datetime, *, flow_run_id: str | None = None) -> bool:
        """Atomically move a runnable run to ``running``; False if another executor has it or it is done."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(ActionRun)
                .where(col(ActionRun.id) == run_id,
                       col(ActionRun.state).in_([S.pending.value, S.scheduled.value]))
                .values(state=S.running.value, attempts=col(ActionRun.attempts) + 1, started_at=at,
                        updated_at=at, flow_run_id=flow_run_id)
            )
            return result.rowcount == 1

    def run(self, run_id: int, at: datetime, *, flow_run_id: str | None = None) -> ActionRun | None:
        """Run one action attempt; returns the run as it ended, or None if it was not claimable."""
        if not self.claim(run_id, at, flow_run_id=flow_run_id):
            log.info("Action run %s was not claimable (already running or finished); skipped", run_id)
            return None
        try:
            with session_scope(self.engine) as session:
                run = session.get(ActionRun, run_id)
                assert run is not None
                decision = session.get(Decision, run.decision_id)
                model = session.get(ManagedModel, run.model_id)
                spec = self.registry.get(run.action)
                config = self.models.get(model.name) if model else None
                if config is None:
                    raise PermanentActionError(f"model {model.name if model else run.model_id} is not in the configuration")
                params = spec.params.model_validate(run.params)
                ctx = ActionContext(session=session, run=run, decision=decision, model=model, config=config, at=at,
                                    artifacts_dir=self.artifacts_dir, actor=self.actor,
                                    source_factory=self.source_factory, notifications=self.notifications,
                                    serving_dir=self.serving_dir)
                if self.energy_metering:
                    with measure_energy() as energy:
                        result = spec.fn(ctx, params)
                    run.energy_kwh = energy.kwh
                    run.emissions_kg = energy.emissions_kg(_intensity(session, run.model_id, at))
                else:
                    result = spec.fn(ctx, params)
                transition(run, S.succeeded.value, at=at, message="")
                run.result = _jsonable(result or {})
                session.add(run)
                audit.record(session, actor=self.actor, kind="action.succeeded", subject=str(run),
                             payload={"decision": run.decision_id, "result": run.result}, time=at)
                log.info("%s succeeded: %s", run, run.result)
                return run
        except Exception as exc:  # noqa: BLE001 - every failure becomes a state, none stops the loop
            return self._failed(run_id, at, exc)

    def _failed(self, run_id: int, at: datetime, exc: Exception) -> ActionRun:
        with session_scope(self.engine) as session:
            run = session.get(ActionRun, run_id)
            assert run is not None
            spec = self.registry.get(run.action) if run.action in self.registry else None
            retries = spec.retries if spec else 0
            message = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, PermanentActionError) and run.attempts <= retries:
                delay = exc.delay if isinstance(exc, TransientActionError) else (
                    spec.retry_delay.total_seconds() * 2 ** (run.attempts - 1) if spec else 60.0)
                transition(run, S.pending.value, at=at, message=f"attempt {run.attempts} failed: {message}")
                run.scheduled_for = at + timedelta(seconds=delay)
                kind = "action.retrying"
                log.warning("%s failed; retrying in %ss: %s", run, int(delay), message)
            else:
                transition(run, S.failed.value, at=at, message=message)
                kind = "action.failed"
                log.error("%s failed after %d attempt(s): %s", run, run.attempts, message)
            session.add(run)
            audit.record(session, actor=self.actor, kind=kind, subject=str(run),
                         payload={"decision": run.decision_id, "error": message, "attempts": run.attempts}, time=at)
            return run


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _intensity(session: Session, model_id: int, at: datetime) -> list[tuple[datetime, float]]:
    """The grid intensity in force for the model at ``at``: its newest ``carbon.intensity`` observation, if any."""
    latest = queries.latest_summary_metrics_fleet(session, [model_id], until=at, prefixes=("carbon.",))
    row = latest.get(model_id, {}).get("carbon.intensity")
    return [] if row is None or row.value is None else [(ensure_utc(row.time), float(row.value))]
