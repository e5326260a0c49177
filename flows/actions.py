"""The action flow: one Prefect flow run per action run, keyed by the run's idempotency key.

(No ``from __future__ import annotations`` in flow modules: see :mod:`flows.tick`.)

Who calls it: the tick flow calls :func:`start_action` for every action run
that is due. The flow itself holds no logic; exactly once comes from the
order of three steps:

1. :func:`start_action` creates the action run's flow run under the run's
   idempotency key (``mape-decision-<id>``, qualified by the knowledge base's
   identity: :func:`prefect_key`; :func:`flows.prefect_runs.ensure_flow_run`).
   Prefect returns the existing flow run for a key it has seen, so a repeated
   tick, a retried tick and every retry of the action share one flow run; its
   run count is the number of attempts.
2. It claims the run in the knowledge base (compare-and-set, recording the
   flow run and this process; refused while the model has another run
   ``running``).
3. Only the claimer runs the flow run, in this process
   (``prefect.flow_engine.run_flow``): an attempt that succeeds ends it
   ``Completed``, one that fails (retried later or not) ``Failed``.

A process killed between these steps leaves the run ``running`` and the flow
run ``Pending`` or ``Running``: the next tick's reconciliation
(:mod:`mape.execute.reconcile`) sees that the claimer is gone, retries the run
and marks the flow run ``Crashed``.

With ``prefect.action_work_pool`` set, the tick runs no action itself
(:func:`submit_action`): step 1 creates a flow run of the action flow's
deployment in that work pool (:mod:`flows.workers`), under the same key, and
a Prefect worker's process runs it with ``claimed=False``, so steps 2 and 3
happen there: the flow run claims the run (fenced on the lease of the
controller that dispatched it) and runs the attempt. A flow run that ended
while its run is still due is scheduled again for the next attempt.
"""


import copy
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import run_flow
from prefect.runtime import flow_run
from prefect.states import Failed
from sqlmodel import select

from flows import workers
from flows.controllers import controller_for
from flows.prefect_runs import ACTION_FLOW, ensure_flow_run, knowledge_base_tag
from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import ActionRun, ActionState
from mape._util.timeutil import ensure_utc, utcnow
from mape.controller import Controller
from mape.execute.executor import Executor

log = logging.getLogger(__name__)


@flow(name=ACTION_FLOW, flow_run_name="action-run-{action_run_id}", log_prints=False)
def action_flow(action_run_id: int, at: datetime, config_file: str | None = None, claimed: bool = False,
                lease_holder: str | None = None, actor: str | None = None) -> Any:
    """Run one attempt of action run ``action_run_id`` at logical time ``at``; returns the run's state after it.

    ``claimed``: :func:`start_action` claimed the run for this flow run
    already. Otherwise (a worker's flow run, :func:`submit_action`) the flow
    claims it: a duplicated flow run finds it taken and does nothing. Its
    claim is fenced on the lease of ``lease_holder`` (the controller that
    dispatched it; None: leases off) and its audit events name ``actor``,
    whatever the worker's own configuration says; the attempt's time is when
    it starts, not before ``at``. An attempt that did not succeed ends the
    flow run ``Failed``, with the run's message.
    """
    executor = controller_for(config_file).executor
    if claimed:
        run = executor.attempt(action_run_id, at)
        if run is None:
            return Failed(message=f"action run {action_run_id} was not this process's to run")
    else:
        executor = _on_behalf_of(executor, lease_holder, actor)
        at = max(_plain(at), utcnow())  # a worker may take the flow run long after the tick: time its attempt
        run = executor.run(action_run_id, at, flow_run_id=str(flow_run.id) if flow_run.id else None)
        if run is None:
            return None
    if run.state == ActionState.succeeded.value:
        return run.state
    return Failed(message=f"{run}: {run.message}")


def _on_behalf_of(executor: Executor, lease_holder: str | None, actor: str | None) -> Executor:
    """The executor of this process, fenced on ``lease_holder``'s lease and naming ``actor`` (a worker's flow run)."""
    if executor.lease_holder == lease_holder and (actor is None or executor.actor == actor):
        return executor
    acting = copy.copy(executor)
    acting.lease_holder = lease_holder
    acting.actor = actor or executor.actor
    return acting


def _plain(at: datetime) -> datetime:
    """A plain UTC ``datetime`` (Prefect may hand a pendulum ``DateTime``, whose sums drop the zone)."""
    at = ensure_utc(at)
    return datetime(at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond, tzinfo=timezone.utc)


def prefect_key(idempotency_key: str, knowledge_base: str) -> str:
    """The idempotency key Prefect sees: the run's own, qualified by its knowledge base.

    Decision ids start at 1 in every knowledge base, and one Prefect server
    may serve several (tests, staging and production, a rebuilt database).

    >>> prefect_key("mape-decision-7", "0b6e5a4e-1f7c-4c53-9d0a-3a1f2b6c8d9e")
    'mape-decision-7@0b6e5a4e-1f7c-4c53-9d0a-3a1f2b6c8d9e'
    """
    return f"{idempotency_key}@{knowledge_base}"


def start_action(controller: Controller, run_id: int, at: datetime, config_file: str | None = None) -> str | None:
    """Run one attempt of a due action run as its flow run; returns the run's state after it, None if not started.

    Not started: the run is no longer runnable, or another process claimed it
    first, or its model has another run ``running``. With
    ``prefect.action_work_pool`` set, the run is handed to that pool's
    workers instead (:func:`submit_action`) and its state now is returned.
    """
    pool = controller.settings.prefect.action_work_pool
    if pool:
        created = submit_action(controller, run_id, at, config_file, pool=pool)
        if created is None:
            return None
        with session_scope(controller.engine) as session:
            row = session.get(ActionRun, run_id)
            return row.state if row is not None else None
    with session_scope(controller.engine) as session:
        row = session.get(ActionRun, run_id)
        if row is None or row.state not in (ActionState.pending.value, ActionState.scheduled.value):
            return None
        instance = queries.knowledge_base_id(session)
        key, action = prefect_key(row.idempotency_key, instance), row.action
    parameters = {"action_run_id": run_id, "at": at, "config_file": config_file, "claimed": True}
    with get_client(sync_client=True) as client:
        created, _ = ensure_flow_run(client, action_flow, idempotency_key=key, name=f"action-run-{run_id}",
                                     parameters=parameters,
                                     tags=["mape-action", f"mape-action:{action}", knowledge_base_tag(instance)])
    if not _run_here(controller, run_id, at, created, parameters):
        return None
    with session_scope(controller.engine) as session:
        row = session.get(ActionRun, run_id)
        return row.state if row is not None else None


def _run_here(controller: Controller, run_id: int, at: datetime, created: FlowRun,
              parameters: dict[str, Any]) -> bool:
    """Claim the run for flow run ``created`` and run the attempt in this process; False if the claim was refused."""
    executor = controller.executor
    if not executor.claim(run_id, at, flow_run_id=str(created.id)):
        return False
    try:
        state = run_flow(action_flow, flow_run=created, parameters=parameters, return_type="state")
    except Exception as exc:
        executor.abandon(run_id, at, exc)  # Prefect failed around the attempt: retried like a failed attempt
        raise
    # Prefect refused to run it (say, a flow run it holds completed while the knowledge base was restored
    # from a backup): the attempt counts as failed, so the run cannot stay ``running`` for this process
    executor.abandon(run_id, at, RuntimeError(f"Prefect did not run flow run {created.id}: {state}"))
    return True


def submit_action(controller: Controller, run_id: int, at: datetime, config_file: str | None, *,
                  pool: str) -> FlowRun | None:
    """Hand a due action run to the workers of ``pool``: its flow run there, scheduled for now; None if not handed.

    Not handed: the run is no longer runnable, or its model has another run
    ``running`` (the worker's claim would be refused; the run is handed at a
    later tick). The flow run is created under the run's idempotency key
    (:func:`prefect_key`), with the knowledge base's tags, so a repeated tick
    finds it; one that ended while the run is still due, or that a worker
    took and never ran (:func:`flows.workers.needs_dispatch`), is scheduled
    again with this tick's parameters. A flow run the embedded mode created
    before the switch to workers belongs to no deployment: that run goes on
    in this process (:func:`start_action`'s own way), once.
    """
    with session_scope(controller.engine) as session:
        row = session.get(ActionRun, run_id)
        if row is None or row.state not in (ActionState.pending.value, ActionState.scheduled.value):
            return None
        busy = session.exec(select(ActionRun.id).where(
            ActionRun.model_id == row.model_id, ActionRun.state == ActionState.running.value,
            ActionRun.id != run_id)).first()
        if busy is not None:
            return None
        instance = queries.knowledge_base_id(session)
        key, action = prefect_key(row.idempotency_key, instance), row.action
    executor = controller.executor
    parameters = {"action_run_id": run_id, "at": _plain(at),
                  "config_file": str(Path(config_file).resolve()) if config_file else None, "claimed": False,
                  "lease_holder": executor.lease_holder, "actor": executor.actor}
    tags = ["mape-action", f"mape-action:{action}", knowledge_base_tag(instance)]
    with get_client(sync_client=True) as client:
        deployment = workers.deployment_id(client, pool)
        created, new = workers.create_run(client, deployment, idempotency_key=key, name=f"action-run-{run_id}",
                                          parameters=parameters, tags=tags)
        if new:
            log.info("Action run %s handed to work pool %s as flow run %s", run_id, pool, created.id)
            return created
        if created.deployment_id != deployment:
            log.warning("Action run %s has flow run %s from before the switch to work pool %s; running it here",
                        run_id, created.id, pool)
            _run_here(controller, run_id, at, created,
                      {"action_run_id": run_id, "at": at, "config_file": config_file, "claimed": True})
            return created
        if workers.needs_dispatch(created):
            workers.reschedule(client, created, parameters)
            log.info("Action run %s is due again; flow run %s rescheduled in work pool %s", run_id, created.id, pool)
    return created

