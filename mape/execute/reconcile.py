"""Reconciliation: settle what a dead controller left, and make the orchestrator agree with the knowledge base.

Who calls it: the controller, first in every tick
(:meth:`mape.controller.Controller.reconcile`), so a restarted controller
settles its predecessor's action runs before anything new is planned or
started. With Prefect, each tick may run in a process of its own, so "restart"
is every tick.

Its passes, each change audited (``action.reconciled`` for the first two):

1. **Runs left ``running``.** The claim names the process of the attempt
   (:mod:`mape.execute.claims`). If that process is gone (same host: its pid
   is dead or now belongs to another process), or the orchestrator already
   ended the attempt's flow run (a claimer on another host), the attempt was
   lost. Its writes never committed (an effector's writes commit with
   ``succeeded``), so the run goes back to ``pending`` with the action type's
   backoff, or to ``failed`` once its ``retries`` are spent, exactly as if the
   attempt had raised (the backoff counted from the attempt's start, since
   nobody knows when the process died); and its flow run, which a killed process leaves
   ``RUNNING`` for ever, is marked ``CRASHED``. A claimer on another host that
   the orchestrator still sees running is left to the action type's timeout.
2. **Flow runs left unfinished** (a process killed between committing an
   outcome and reporting it to Prefect): each is set to the state its action
   run has (:func:`flow_state_for`).
3. **Ticks left running.** A killed process leaves its tick's flow run
   ``RUNNING`` for ever too; each tick flow run names its process from its
   creation (or, for a run the served deployment created, the process that
   serves it, until the run names its own), and one whose process is gone
   is marked ``CRASHED`` (audited as ``tick.reconciled``). A tick on another
   host is left alone.
4. **Canary replicas no running canary owns.** A retrain attempt lost after
   it started its canary's replicas leaves them running with no canary row;
   once its run is final, they are withdrawn
   (:func:`mape.execute.canary.orphans.withdraw_orphans`, audited as
   ``canary.orphans_withdrawn``). The executor does the same when the run
   ends; this pass catches a controller that died in between.

Only the knowledge base's own flow runs are read (they carry its tag): one
Prefect server may orchestrate several knowledge bases.

The orchestrator is reached only through :class:`FlowRuns` (Prefect's lives
in :mod:`flows.prefect_runs`); without one, only the knowledge base (and
the canary replicas) are reconciled.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import update
from sqlmodel import col

from knowledge import audit, queries
from knowledge.database import session_scope
from knowledge.tables import ActionRun, ActionState
from mape.execute.canary import orphans
from mape.execute.claims import Claimer, alive

if TYPE_CHECKING:
    from mape.execute.executor import Executor

log = logging.getLogger(__name__)
S = ActionState

__all__ = ["FINAL_FLOW_STATES", "FlowRuns", "Reconciliation", "ReconcileReport", "agrees", "flow_state_for",
           "reconcile"]

#: Orchestrator state types (Prefect's names) after which a flow run does nothing more.
FINAL_FLOW_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
_AGREE: dict[str, frozenset[str]] = {
    S.running.value: frozenset({"PENDING", "SCHEDULED", "RUNNING"}),
    # waiting for its first attempt (a flow run created, not yet claimed) or for a retry of a failed one
    S.pending.value: frozenset({"PENDING", "SCHEDULED", "FAILED", "CRASHED"}),
    S.scheduled.value: frozenset({"PENDING", "SCHEDULED", "FAILED", "CRASHED"}),
    S.succeeded.value: frozenset({"COMPLETED"}),
    S.failed.value: frozenset({"FAILED", "CRASHED"}),
    S.timed_out.value: frozenset({"FAILED", "CRASHED"}),
    S.cancelled.value: frozenset({"CANCELLED"}),
}


def agrees(run_state: str, flow_state: str | None) -> bool:
    """Whether an action run's state and its flow run's state type tell the same story.

    >>> agrees("succeeded", "COMPLETED"), agrees("pending", "CRASHED"), agrees("succeeded", "RUNNING")
    (True, True, False)
    """
    return flow_state is None or flow_state in _AGREE.get(run_state, frozenset())


def flow_state_for(run_state: str) -> str:
    """The flow run state (type, or a Prefect state name) that matches an action run's state.

    >>> [flow_state_for(s) for s in ("succeeded", "pending", "timed_out", "cancelled", "lost")]
    ['COMPLETED', 'FAILED', 'TimedOut', 'CANCELLED', 'CRASHED']
    """
    return {S.succeeded.value: "COMPLETED", S.timed_out.value: "TimedOut", S.cancelled.value: "CANCELLED",
            "lost": "CRASHED"}.get(run_state, "FAILED")


class FlowRuns(Protocol):
    """What reconciliation needs of the orchestrator that runs the action attempts."""

    def states(self, flow_run_ids: Collection[str]) -> dict[str, str]:
        """The state type (``RUNNING``, ``COMPLETED``, ...) of each of these flow runs that exists."""
        ...

    def unfinished(self, knowledge_base: str | None = None) -> dict[str, str]:
        """Every action flow run (of this knowledge base, when given) not in a final state, by id: its state type."""
        ...

    def unfinished_ticks(self, knowledge_base: str) -> dict[str, str | None]:
        """The knowledge base's tick flow runs not in a final state, by id: the process answering for each, if known.

        The process that runs it, or, for a run that has not named one yet,
        the process that serves the deployment which created it.
        """
        ...

    def mark(self, flow_run_id: str, state: str, message: str) -> None:
        """Set a flow run's state: one of :func:`flow_state_for`'s answers."""
        ...


@dataclass(frozen=True)
class Reconciliation:
    """One change: an action run's state, its flow run's state, or both."""

    run_id: int
    reason: str
    state_before: str
    state_after: str
    flow_run_id: str | None = None
    flow_before: str | None = None
    flow_after: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.state_after != self.state_before:
            parts.append(f"{self.state_before} -> {self.state_after}")
        if self.flow_after is not None:
            parts.append(f"flow run {self.flow_run_id} {self.flow_before} -> {self.flow_after}")
        return f"action run {self.run_id}: {'; '.join(parts)} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "reason": self.reason, "state_before": self.state_before,
                "state_after": self.state_after, "flow_run_id": self.flow_run_id, "flow_before": self.flow_before,
                "flow_after": self.flow_after}


@dataclass
class ReconcileReport:
    changes: list[Reconciliation] = field(default_factory=list)
    left_running: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Tick flow runs marked ``CRASHED``: their process was gone.
    crashed_ticks: list[str] = field(default_factory=list)
    #: Canary replicas withdrawn because no running canary owned them, one sentence each.
    canaries: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"changes": [c.as_dict() for c in self.changes],
                "reconciled": [str(c) for c in self.changes] + [f"tick flow run {t}: RUNNING -> CRASHED"
                                                                  for t in self.crashed_ticks] + list(self.canaries),
                "left_running": list(self.left_running), "errors": list(self.errors)}


def reconcile(executor: Executor, at: datetime, *, flow_runs: FlowRuns | None = None) -> ReconcileReport:
    """Retry or fail the runs whose process died, then align the orchestrator's flow runs; see the module."""
    report = ReconcileReport()
    with session_scope(executor.engine) as session:
        running = [(r.id, r.flow_run_id, r.claimed_by, r.attempts) for r in queries.running_actions(session)]
    states: dict[str, str] = {}
    flow_ids = [flow_run_id for _, flow_run_id, _, _ in running if flow_run_id]
    if flow_runs is not None and flow_ids:
        try:
            states = flow_runs.states(flow_ids)
        except Exception as exc:  # noqa: BLE001 - an unreachable orchestrator leaves only the local evidence
            report.errors.append(f"reading flow run states: {type(exc).__name__}: {exc}")
    for run_id, flow_run_id, claimed_by, attempts in running:
        assert run_id is not None
        claimer = Claimer.parse(claimed_by)
        living = alive(claimer) if claimer is not None else None
        flow_state = states.get(flow_run_id) if flow_run_id else None
        if living is True or (living is None and flow_state not in FINAL_FLOW_STATES):
            report.left_running.append(run_id)
            continue
        cause = (f"its process {claimed_by} is gone" if living is False else
                 f"its flow run {flow_run_id} is {flow_state}")
        reason = f"attempt {attempts} was lost: {cause}"
        change = _lost(executor, run_id, attempts, claimed_by, at, cause, flow_run_id, flow_state)
        if change is None:
            continue
        if flow_runs is not None and flow_run_id and (flow_state is None or flow_state not in FINAL_FLOW_STATES):
            change = _mark(flow_runs, change, flow_run_id, "lost", reason, report)
        report.changes.append(change)
        _audit(executor, change, at)
    if flow_runs is not None:
        with session_scope(executor.engine) as session:
            instance = queries.knowledge_base_id(session)
        _align(executor, flow_runs, instance, at, report)
        _crashed_ticks(executor, flow_runs, instance, at, report)
    _orphan_canaries(executor, at, report)
    for change in report.changes:
        log.warning("Reconciled %s", change)
    return report


def _orphan_canaries(executor: Executor, at: datetime, report: ReconcileReport) -> None:
    """Withdraw the canary replicas that lost attempts of now-final runs left (:mod:`mape.execute.canary.orphans`)."""
    try:
        found = orphans.withdraw_orphans(executor.engine, executor.models, executor.serving_dir, at,
                                         actor=executor.actor)
    except Exception as exc:  # noqa: BLE001 - the next tick tries again
        report.errors.append(f"withdrawing orphan canary replicas: {type(exc).__name__}: {exc}")
        return
    report.canaries.extend(found.withdrawn)
    report.errors.extend(found.errors)


def _lost(executor: Executor, run_id: int, attempts: int, claimed_by: str | None, at: datetime, cause: str,
          flow_run_id: str | None, flow_state: str | None) -> Reconciliation | None:
    """Retry or fail a run whose attempt was lost (compare-and-set on that attempt); None if it moved meanwhile."""
    with session_scope(executor.engine) as session:
        claimed = (col(ActionRun.claimed_by) == claimed_by) if claimed_by is not None else \
            col(ActionRun.claimed_by).is_(None)
        fenced = session.execute(
            update(ActionRun)
            .where(col(ActionRun.id) == run_id, col(ActionRun.state) == S.running.value,
                   col(ActionRun.attempts) == attempts, claimed)
            .values(updated_at=at)
            .execution_options(synchronize_session=False)
        )
        if fenced.rowcount != 1:  # type: ignore[attr-defined]
            return None
        run = session.get(ActionRun, run_id)
        assert run is not None
        executor.retry_or_fail(session, run, at, cause, verb="was lost", since=run.started_at,
                               payload={"claimed_by": claimed_by, "flow_run_id": flow_run_id,
                                        "flow_state": flow_state})
        return Reconciliation(run_id=run_id, reason=f"attempt {attempts} was lost: {cause}",
                              state_before=S.running.value, state_after=run.state,
                              flow_run_id=flow_run_id, flow_before=flow_state)


def _mark(flow_runs: FlowRuns, change: Reconciliation, flow_run_id: str, state: str, message: str,
          report: ReconcileReport) -> Reconciliation:
    target = flow_state_for(state)
    try:
        flow_runs.mark(flow_run_id, target, message)
    except Exception as exc:  # noqa: BLE001 - the next tick tries again
        report.errors.append(f"marking flow run {flow_run_id} {target}: {type(exc).__name__}: {exc}")
        return change
    return Reconciliation(run_id=change.run_id, reason=change.reason, state_before=change.state_before,
                          state_after=change.state_after, flow_run_id=flow_run_id, flow_before=change.flow_before,
                          flow_after=target)


def _align(executor: Executor, flow_runs: FlowRuns, instance: str, at: datetime, report: ReconcileReport) -> None:
    """Give each unfinished flow run the state of its action run (unless that run is still running)."""
    try:
        unfinished = flow_runs.unfinished(instance)
    except Exception as exc:  # noqa: BLE001
        report.errors.append(f"reading unfinished flow runs: {type(exc).__name__}: {exc}")
        return
    with session_scope(executor.engine) as session:
        runs = [(r.id, r.state, r.flow_run_id, r.message) for r in queries.action_runs_by_flow_run(session, unfinished)]
    for run_id, state, flow_run_id, message in runs:
        assert run_id is not None and flow_run_id is not None
        flow_state = unfinished[flow_run_id]
        if state == S.running.value or agrees(state, flow_state):
            continue
        reason = f"its flow run was left {flow_state} while the run is {state}"
        change = _mark(flow_runs, Reconciliation(run_id=run_id, reason=reason, state_before=state, state_after=state,
                                                 flow_run_id=flow_run_id, flow_before=flow_state),
                       flow_run_id, state, message or reason, report)
        if change.flow_after is not None:
            report.changes.append(change)
            _audit(executor, change, at)


def _crashed_ticks(executor: Executor, flow_runs: FlowRuns, instance: str, at: datetime,
                   report: ReconcileReport) -> None:
    """Mark ``CRASHED`` each unfinished tick flow run whose process is gone (this host's only: others cannot tell)."""
    try:
        ticks = flow_runs.unfinished_ticks(instance)
    except Exception as exc:  # noqa: BLE001 - the next tick tries again
        report.errors.append(f"reading unfinished tick flow runs: {type(exc).__name__}: {exc}")
        return
    for flow_run_id, process in ticks.items():
        claimer = Claimer.parse(process)
        if claimer is None or alive(claimer) is not False:
            continue
        message = f"the process that ran or served this tick ({process}) is gone"
        try:
            flow_runs.mark(flow_run_id, "CRASHED", message)
        except Exception as exc:  # noqa: BLE001
            report.errors.append(f"marking tick flow run {flow_run_id} CRASHED: {type(exc).__name__}: {exc}")
            continue
        report.crashed_ticks.append(flow_run_id)
        log.warning("Reconciled tick flow run %s: RUNNING -> CRASHED (%s)", flow_run_id, message)
        with session_scope(executor.engine) as session:
            audit.record(session, actor=executor.actor, kind="tick.reconciled", subject=f"tick flow run {flow_run_id}",
                         payload={"flow_run_id": flow_run_id, "process": process, "flow_after": "CRASHED"}, time=at)


def _audit(executor: Executor, change: Reconciliation, at: datetime) -> None:
    with session_scope(executor.engine) as session:
        audit.record(session, actor=executor.actor, kind="action.reconciled", subject=f"action run {change.run_id}",
                     payload=change.as_dict(), time=at)
