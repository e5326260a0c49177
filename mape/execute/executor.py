"""The executor: turns decisions into action runs and runs them exactly once.

Who calls it: the controller calls :meth:`Executor.dispatch` once per tick
(decisions → pending runs), and the Prefect action flow calls
:meth:`Executor.run` for each pending run.

Exactly once, by construction rather than by memory:

* a decision has at most one action run (unique ``decision_id``) and a
  repeated tick produces no new decision (the planner's dedup key);
* a run is claimed with a compare-and-set ``UPDATE ... WHERE state IN
  (pending, scheduled)``, so two executors cannot both start it, and the
  claim is refused while another run of the same model is ``running`` (at
  most one action in flight per model);
* the claim records the process that runs the attempt (``claimed_by``), so
  reconciliation (:mod:`mape.execute.reconcile`) can tell a run whose process
  died from one still running;
* the effector's writes (new version, promotion) commit in the same
  transaction as the ``succeeded`` state, so a crash mid-action leaves no half
  result, and the run's state says what to do next; that transaction is
  fenced (``UPDATE ... WHERE state = running AND attempts = n AND claimed_by
  = me``), so an attempt that was timed out or reconciled meanwhile commits
  nothing.

Failures never escape: :class:`~mape.errors.PermanentActionError` fails the
run, :class:`~mape.errors.TransientActionError` and unexpected exceptions are
retried with backoff until the action type's ``retries`` are spent. An attempt
past its type's ``timeout`` is interrupted where it runs (the main thread, as
in ``mape tick`` and ``mape run``'s tick processes: ``SIGALRM``) and ends
``timed_out``, its writes rolled back; elsewhere, and for a claimer that hangs
outside Python, a later tick times the run out.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError
from sqlalchemy import exists, or_, select as sa_select, update
from sqlalchemy.orm import aliased
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from knowledge import audit, queries
from knowledge.database import session_scope
from knowledge.leases import holds_clause
from knowledge.tables import ActionRun, ActionState, Decision, ManagedModel
from mape._util.timeutil import ensure_utc, utcnow
from mape.config import ModelConfig, NotificationSettings
from mape.data.artifacts import Location
from mape.data.energy import measure_energy
from mape.data.sources import TableSource, open_source
from mape.errors import ActionTimeoutError, PermanentActionError, TransientActionError
from mape.execute.canary import orphans
from mape.execute.claims import this_process
from mape.execute.context import ActionContext
from mape.execute.registry import ActionRegistry
from mape.execute.state import transition

log = logging.getLogger(__name__)
S = ActionState


def idempotency_key(decision: Decision) -> str:
    """The run's idempotency key; Prefect gets it too (:func:`flows.actions.start_action`), so one decision is one flow run."""
    return f"mape-decision-{decision.id}"


class AttemptLost(Exception):
    """The attempt's run is no longer this attempt's (timed out or reconciled meanwhile): its outcome is discarded."""


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
                 energy_metering: bool = False, lease_holder: str | None = None) -> None:
        self.engine = engine
        self.lease_holder = lease_holder
        self.energy_metering = energy_metering
        self.serving_dir = serving_dir
        self.registry = registry
        self.models = models
        self.artifacts_dir = artifacts_dir
        self.actor = actor
        self.source_factory = source_factory
        self.notifications = notifications or NotificationSettings()

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, session: Session, at: datetime, *, models: Collection[int] | None = None) -> list[ActionRun]:
        """Create a run for every decision that should act and has none; time out stale runs.

        The run is ``pending`` (runnable now), or ``scheduled`` for the
        decision's ``not_before`` when its policy defers the action. With
        ``models``, only the decisions and runs of those models (the ones this
        controller holds the leases of).
        """
        self._time_out_stale(session, at, models)
        created: list[ActionRun] = []
        for decision in queries.decisions_to_dispatch(session, models=models):
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

    def _time_out_stale(self, session: Session, at: datetime, models: Collection[int] | None = None) -> None:
        running = select(ActionRun).where(ActionRun.state == S.running.value)
        if models is not None:
            running = running.where(col(ActionRun.model_id).in_(list(models)))
        for run in session.exec(running):
            spec = self.registry.get(run.action) if run.action in self.registry else None
            if spec is None or spec.timeout is None or run.started_at is None:
                continue
            if run.started_at + spec.timeout < at:
                # compare-and-set on the attempt: an attempt that finished meanwhile keeps its outcome
                message = f"still running {at - run.started_at} after start; timeout {spec.timeout}"
                result = session.execute(
                    update(ActionRun)
                    .where(col(ActionRun.id) == run.id, col(ActionRun.state) == S.running.value,
                           col(ActionRun.attempts) == run.attempts)
                    .values(state=S.timed_out.value, message=message, finished_at=at, updated_at=at)
                    .execution_options(synchronize_session=False)
                )
                session.expire(run)
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    audit.record(session, actor=self.actor, kind="action.timed_out", subject=str(run), time=at,
                                 payload={"decision": run.decision_id, "attempts": run.attempts,
                                          "claimed_by": run.claimed_by})

    def runnable(self, session: Session, at: datetime, *, deferred: bool = True,
                 models: Collection[int] | None = None) -> list[int]:
        """Ids of pending runs whose time has come, oldest first; ``deferred=False`` leaves ``scheduled`` runs out.

        With ``models``, only those models' runs.
        """
        states = [S.pending.value, S.scheduled.value] if deferred else [S.pending.value]
        query = (select(ActionRun.id)
                 .where(col(ActionRun.state).in_(states),
                        or_(col(ActionRun.scheduled_for).is_(None), col(ActionRun.scheduled_for) <= at))
                 .order_by(col(ActionRun.id)))
        if models is not None:
            query = query.where(col(ActionRun.model_id).in_(list(models)))
        return list(session.exec(query).all())

    # ------------------------------------------------------------------ run

    def claim(self, run_id: int, at: datetime, *, flow_run_id: str | None = None) -> bool:
        """Atomically move a runnable run to ``running`` for this process; False if it cannot start now.

        It cannot when another executor has it, it is done, or another run of
        its model is ``running``: one compare-and-set ``UPDATE`` decides all
        three. On PostgreSQL the model's row is locked first, so two claims for
        runs of one model are serialised; SQLite serialises writers anyway.
        With a ``lease_holder`` (controllers sharing a fleet), the same
        ``UPDATE`` also requires the model's lease to be this controller's
        now: a controller whose lease lapsed cannot start its model's work.
        """
        other = aliased(ActionRun)
        busy = exists().where(other.model_id == ActionRun.model_id, other.state == S.running.value,
                              other.id != ActionRun.id)
        fence = [holds_clause(ActionRun.model_id, self.lease_holder, utcnow())] if self.lease_holder else []
        with self.engine.begin() as conn:
            if conn.dialect.name != "sqlite":
                model_of_run = sa_select(ActionRun.model_id).where(col(ActionRun.id) == run_id).scalar_subquery()
                conn.execute(sa_select(ManagedModel.id).where(col(ManagedModel.id) == model_of_run).with_for_update())
            result = conn.execute(
                update(ActionRun)
                .where(col(ActionRun.id) == run_id,
                       col(ActionRun.state).in_([S.pending.value, S.scheduled.value]), ~busy, *fence)
                .values(state=S.running.value, attempts=col(ActionRun.attempts) + 1, started_at=at,
                        updated_at=at, flow_run_id=flow_run_id, claimed_by=str(this_process()))
            )
            return result.rowcount == 1

    def run(self, run_id: int, at: datetime, *, flow_run_id: str | None = None) -> ActionRun | None:
        """Claim and run one action attempt; returns the run as it ended, or None if it was not claimable."""
        if not self.claim(run_id, at, flow_run_id=flow_run_id):
            log.info("Action run %s was not claimable (finished, running elsewhere, or its model is busy); skipped",
                     run_id)
            return None
        return self.attempt(run_id, at)

    def attempt(self, run_id: int, at: datetime) -> ActionRun | None:
        """Run the attempt this process claimed (:meth:`claim`); returns the run as it ended.

        None if the run is not this process's running attempt. The outcome is
        fenced: if the run was timed out or reconciled while the effector ran,
        nothing of the attempt is written and the run is returned as it is.
        """
        with session_scope(self.engine) as session:
            current = session.get(ActionRun, run_id)
            if current is None or current.state != S.running.value or current.claimed_by != str(this_process()):
                log.warning("Action run %s is not running for this process; its attempt is not run", run_id)
                return None
            number = current.attempts
        return self.withdraw_orphan_canary(self._attempt(run_id, at, number), at)

    def _attempt(self, run_id: int, at: datetime, number: int) -> ActionRun | None:
        """Attempt ``number`` of the run, its outcome committed (fenced); the run as it ended."""
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
                limit = spec.timeout.total_seconds() if spec.timeout else None
                if self.energy_metering:
                    with measure_energy() as energy, _deadline(limit):
                        result = spec.fn(ctx, params)
                    run.energy_kwh = energy.kwh
                    run.emissions_kg = energy.emissions_kg(_intensity(session, run.model_id, at))
                else:
                    with _deadline(limit):
                        result = spec.fn(ctx, params)
                _fence(session, run_id, number, at)
                transition(run, S.succeeded.value, at=at, message="")
                run.result = _jsonable(result or {})
                _record_emissions(run, decision)
                session.add(run)
                audit.record(session, actor=self.actor, kind="action.succeeded", subject=str(run),
                             payload={"decision": run.decision_id, "result": run.result}, time=at)
                log.info("%s succeeded: %s", run, run.result)
                return run
        except AttemptLost as exc:
            return self._discarded(run_id, number, exc)
        except ActionTimeoutError as exc:
            return self._timed_out(run_id, at, exc, attempt=number)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a state, none stops the loop
            return self._failed(run_id, at, exc, attempt=number)

    def abandon(self, run_id: int, at: datetime, exc: Exception) -> ActionRun | None:
        """An attempt this process claimed but could not run (its orchestrator failed): it counts as a failed attempt.

        Nothing happens unless the run is still ``running`` for this process
        (an attempt that finished keeps its outcome).
        """
        with session_scope(self.engine) as session:
            run = session.get(ActionRun, run_id)
            if run is None or run.state != S.running.value or run.claimed_by != str(this_process()):
                return run
            number = run.attempts
        return self.withdraw_orphan_canary(self._failed(run_id, at, exc, attempt=number), at)

    def withdraw_orphan_canary(self, run: ActionRun | None, at: datetime) -> ActionRun | None:
        """After a run that asked for a canary ended for good: withdraw canary replicas no running canary owns.

        A lost attempt of the run may have started them (its transaction did
        not commit, so no canary row owns them); see
        :mod:`mape.execute.canary.orphans`. A run that will be retried keeps
        them (the retry's canary replaces them). Never raises: a failure is
        logged, and reconciliation tries again at the next tick. Returns
        ``run``.
        """
        if run is None or run.state not in orphans.FINAL_RUN_STATES or not orphans.asked_for_canary(run):
            return run
        try:
            report = orphans.withdraw_orphans(self.engine, self.models, self.serving_dir, at, actor=self.actor,
                                              model_ids=[run.model_id])
        except Exception:  # noqa: BLE001 - the run's outcome stands; reconciliation sweeps again
            log.exception("Canary replicas left by %s could not be checked; the next reconciliation tries again", run)
            return run
        for problem in report.errors:
            log.error("%s", problem)
        with session_scope(self.engine) as session:  # its result now records the check
            return session.get(ActionRun, run.id) or run

    def _timed_out(self, run_id: int, at: datetime, exc: Exception, *, attempt: int) -> ActionRun | None:
        try:
            with session_scope(self.engine) as session:
                _fence(session, run_id, attempt, at)
                run = session.get(ActionRun, run_id)
                assert run is not None
                transition(run, S.timed_out.value, at=at, message=str(exc))
                session.add(run)
                audit.record(session, actor=self.actor, kind="action.timed_out", subject=str(run), time=at,
                             payload={"decision": run.decision_id, "attempts": run.attempts, "error": str(exc)})
                log.error("%s timed out: %s", run, exc)
                return run
        except AttemptLost as lost:
            return self._discarded(run_id, attempt, lost)

    def _discarded(self, run_id: int, number: int, exc: Exception) -> ActionRun | None:
        with session_scope(self.engine) as session:
            run = session.get(ActionRun, run_id)
            log.warning("Attempt %d of %s was discarded: %s", number, run, exc)
            return run

    def _failed(self, run_id: int, at: datetime, exc: Exception, *, attempt: int) -> ActionRun | None:
        try:
            with session_scope(self.engine) as session:
                _fence(session, run_id, attempt, at)
                run = session.get(ActionRun, run_id)
                assert run is not None
                self.retry_or_fail(session, run, at, f"{type(exc).__name__}: {exc}",
                                   permanent=isinstance(exc, PermanentActionError),
                                   delay=exc.delay if isinstance(exc, TransientActionError) else None)
                return run
        except AttemptLost as lost:
            return self._discarded(run_id, attempt, lost)

    def retry_or_fail(self, session: Session, run: ActionRun, at: datetime, message: str, *, permanent: bool = False,
                      delay: float | None = None, kind: str | None = None, verb: str = "failed",
                      payload: dict[str, Any] | None = None, since: datetime | None = None) -> None:
        """Move a running run whose attempt ended without success back to ``pending`` (with backoff) or to ``failed``.

        A permanent error, or an attempt past the action type's ``retries``,
        fails the run; otherwise it is retried after ``delay`` seconds, or the
        type's ``retry_delay`` doubled per attempt, counted from ``since``
        (default ``at``; reconciliation counts from the lost attempt's start,
        as it cannot know when its process died). One audit event (``kind``,
        default ``action.retrying`` or ``action.failed``) records it.
        """
        spec = self.registry.get(run.action) if run.action in self.registry else None
        retries = spec.retries if spec else 0
        if not permanent and run.attempts <= retries:
            wait = delay if delay is not None else (
                spec.retry_delay.total_seconds() * 2 ** (run.attempts - 1) if spec else 60.0)
            transition(run, S.pending.value, at=at, message=f"attempt {run.attempts} {verb}: {message}")
            run.scheduled_for = max(at, ensure_utc(since or at) + timedelta(seconds=wait))
            event = kind or "action.retrying"
            log.warning("%s %s; retrying in %ss: %s", run, verb, int(wait), message)
        else:
            transition(run, S.failed.value, at=at, message=message if verb == "failed" else f"{verb}: {message}")
            event = kind or "action.failed"
            log.error("%s failed after %d attempt(s): %s", run, run.attempts, message)
        session.add(run)
        audit.record(session, actor=self.actor, kind=event, subject=str(run),
                     payload={"decision": run.decision_id, "error": message, "attempts": run.attempts,
                              "state": run.state, **(payload or {})}, time=at)


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`~mape.errors.ActionTimeoutError` in the block after ``seconds`` of wall time.

    Only in the main thread of a platform with ``SIGALRM`` (the previous
    handler and timer are restored); elsewhere the block runs unbounded.
    """
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise ActionTimeoutError(f"interrupted after {seconds:g}s, the action type's timeout")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _fence(session: Session, run_id: int, attempt: int, at: datetime) -> None:
    """Hold the run for this attempt's outcome, or raise :class:`AttemptLost` if it is no longer this attempt's.

    A compare-and-set in the outcome's own transaction: on PostgreSQL it locks
    the row until commit, so nothing can time out or reconcile the run between
    the check and the outcome.
    """
    result = session.execute(
        update(ActionRun)
        .where(col(ActionRun.id) == run_id, col(ActionRun.state) == S.running.value,
               col(ActionRun.attempts) == attempt, col(ActionRun.claimed_by) == str(this_process()))
        .values(updated_at=at)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AttemptLost(f"the run is no longer running attempt {attempt} for this process")


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _record_emissions(run: ActionRun, decision: Decision | None) -> None:
    """Beside a metered run's realised emissions, what its deferral's forecasts promised (``result.emissions``).

    The decision's ``evidence.schedule`` holds the forecast intensity of
    starting at the earliest time and of the window chosen; times the energy
    measured, they are the run-now and chosen-window forecast emissions, so a
    saving is reported against what was realised, not only what was promised.
    """
    schedule = (decision.evidence or {}).get("schedule") if decision is not None else None
    forecast = schedule.get("forecast") if isinstance(schedule, dict) else None
    if run.energy_kwh is None or not isinstance(forecast, dict):
        return

    def kg(means: Any) -> float | None:
        g = means.get("carbon") if isinstance(means, dict) else None
        return round(run.energy_kwh * g / 1000, 9) if isinstance(g, (int, float)) and run.energy_kwh is not None \
            else None

    run.result = {**(run.result or {}), "emissions": {
        "energy_kwh": run.energy_kwh, "realised_kg": run.emissions_kg,
        "run_now_forecast_kg": kg(forecast.get("run_now")), "chosen_forecast_kg": kg(forecast.get("chosen")),
        "planned_start": schedule.get("start") if isinstance(schedule, dict) else None}}


def _intensity(session: Session, model_id: int, at: datetime) -> list[tuple[datetime, float]]:
    """The grid intensity in force for the model at ``at``: its newest ``carbon.intensity`` observation, if any."""
    latest = queries.latest_summary_metrics_fleet(session, [model_id], until=at, prefixes=("carbon.",))
    row = latest.get(model_id, {}).get("carbon.intensity")
    return [] if row is None or row.value is None else [(ensure_utc(row.time), float(row.value))]
