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
"""


from datetime import datetime
from typing import Any

from prefect import flow, get_client
from prefect.flow_engine import run_flow
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.controllers import controller_for
from flows.prefect_runs import ACTION_FLOW, ensure_flow_run, knowledge_base_tag
from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import ActionRun, ActionState
from mape.controller import Controller


@flow(name=ACTION_FLOW, flow_run_name="action-run-{action_run_id}", log_prints=False)
def action_flow(action_run_id: int, at: datetime, config_file: str | None = None, claimed: bool = False) -> Any:
    """Run one attempt of action run ``action_run_id`` at logical time ``at``; returns the run's state after it.

    ``claimed``: :func:`start_action` claimed the run for this flow run
    already. Otherwise the flow claims it (a duplicated flow run finds it
    taken and does nothing). An attempt that did not succeed ends the flow run
    ``Failed``, with the run's message.
    """
    executor = controller_for(config_file).executor
    if claimed:
        run = executor.attempt(action_run_id, at)
        if run is None:
            return Failed(message=f"action run {action_run_id} was not this process's to run")
    else:
        run = executor.run(action_run_id, at, flow_run_id=str(flow_run.id) if flow_run.id else None)
        if run is None:
            return None
    if run.state == ActionState.succeeded.value:
        return run.state
    return Failed(message=f"{run}: {run.message}")


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
    first, or its model has another run ``running``.
    """
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
    executor = controller.executor
    if not executor.claim(run_id, at, flow_run_id=str(created.id)):
        return None
    try:
        state = run_flow(action_flow, flow_run=created, parameters=parameters, return_type="state")
    except Exception as exc:
        executor.abandon(run_id, at, exc)  # Prefect failed around the attempt: retried like a failed attempt
        raise
    # Prefect refused to run it (say, a flow run it holds completed while the knowledge base was restored
    # from a backup): the attempt counts as failed, so the run cannot stay ``running`` for this process
    executor.abandon(run_id, at, RuntimeError(f"Prefect did not run flow run {created.id}: {state}"))
    with session_scope(controller.engine) as session:
        row = session.get(ActionRun, run_id)
        return row.state if row is not None else None
