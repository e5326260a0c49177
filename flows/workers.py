"""Action runs on Prefect workers: the process work pool, the action flow's deployment in it, its flow runs.

(No ``from __future__ import annotations``: see :mod:`flows.tick`.)

Who calls it: ``mape workers deploy`` (:mod:`mape.cli_workers`) and ``mape
run`` at its start call :func:`deploy`; :func:`flows.actions.start_action`
calls :func:`deployment_id`, :func:`create_run`, :func:`needs_dispatch` and
:func:`reschedule` when ``prefect.action_work_pool`` is set, instead of
running the action in the tick's process.

The deployment is the action flow (``flows/actions.py:action_flow``) of the
project installed here, named after its pool (``mape-action/<pool>``); its
one pull step sets the working directory to the project's root, so a process
worker on any machine with mape installed at the same path loads it from
there (``prefect worker start --pool <pool>``) without copying code around.
A flow run of it is created under the action run's idempotency key; the
worker's flow run claims the run (:func:`flows.actions.action_flow`,
``claimed=False``), so the claim in the knowledge base stays the exactly-once
point. A flow run that ended while its action run is still due (a failed
attempt to retry, a claim refused because the model was busy or the lease
had moved) is scheduled again (:func:`reschedule`): every attempt of a run is
one flow run, as in the embedded mode, and its run count counts the attempts.
"""

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import DeploymentFlowRunCreate, WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.states import Scheduled, to_state_create
from prefect.utilities.callables import parameter_schema

from flows.prefect_runs import ACTION_FLOW, WORKER_START_GRACE

log = logging.getLogger(__name__)

__all__ = ["ENTRYPOINT", "PROJECT_ROOT", "create_run", "deploy", "deployment_id", "deployment_name",
           "ensure_work_pool", "needs_dispatch", "reschedule"]

#: The root of the installed project: the deployment's path (the workers' working directory).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The action flow, relative to :data:`PROJECT_ROOT`.
ENTRYPOINT = "flows/actions.py:action_flow"
_FINAL = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})


def deployment_name(pool: str) -> str:
    """The action flow's deployment for ``pool``, as Prefect names it (``<flow>/<deployment>``).

    >>> deployment_name("mape-actions")
    'mape-action/mape-actions'
    """
    return f"{ACTION_FLOW}/{pool}"


def ensure_work_pool(client: SyncPrefectClient, pool: str) -> tuple[str, bool]:
    """The type of work pool ``pool``, created as a ``process`` pool (Prefect's default job template) if missing.

    Returns the pool's type and whether it was created here. A pool of
    another type (``kubernetes``...) is used as it is: its workers must
    have mape installed at the deployment's path.
    """
    try:
        return client.read_work_pool(pool).type, False
    except ObjectNotFound:
        pass
    from prefect.workers.process import ProcessWorker

    try:
        created = client.create_work_pool(WorkPoolCreate(
            name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
            description="mape's action runs: `prefect worker start --pool " + pool + "` on a machine with mape."))
    except ObjectAlreadyExists:  # another controller created it meanwhile
        return client.read_work_pool(pool).type, False
    log.info("Created the process work pool %s", pool)
    return created.type, True


def deploy(pool: str, *, path: Path | None = None) -> UUID:
    """Create ``pool`` if missing and register (or update) the action flow's deployment in it; its id.

    ``path``: where the project lies on the workers' machines (default: here,
    :data:`PROJECT_ROOT`). Idempotent: Prefect upserts a deployment by flow
    and name.
    """
    from flows.actions import action_flow

    root = str(path if path is not None else PROJECT_ROOT)
    with get_client(sync_client=True) as client:
        ensure_work_pool(client, pool)
        flow_id = client.create_flow(action_flow)
        deployment = client.create_deployment(
            flow_id=flow_id, name=pool, work_pool_name=pool, entrypoint=ENTRYPOINT, path=root,
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": root}}],
            parameter_openapi_schema=parameter_schema(action_flow).model_dump(exclude_unset=True),
            enforce_parameter_schema=False, tags=["mape-action"],
            description="One attempt of a mape action run; the tick creates its flow runs, a worker runs them.")
    log.info("Deployed %s to work pool %s (project root %s)", deployment_name(pool), pool, root)
    return deployment


def deployment_id(client: SyncPrefectClient, pool: str) -> UUID:
    """The id of the action flow's deployment in ``pool``; deployed from here first if Prefect has none."""
    try:
        return client.read_deployment_by_name(deployment_name(pool)).id
    except ObjectNotFound:
        log.warning("Prefect has no deployment %s; deploying it from %s", deployment_name(pool), PROJECT_ROOT)
        return deploy(pool)


def create_run(client: SyncPrefectClient, deployment: UUID, *, idempotency_key: str, name: str,
               parameters: dict[str, Any], tags: list[str]) -> tuple[FlowRun, bool]:
    """The flow run of ``deployment`` with this idempotency key, created ``Scheduled`` for now if new; and whether new.

    The deployment's endpoint honours the key like ``POST /flow_runs/``
    does (status 200 with the existing run, 201 for a new one). The key is
    unique per flow, so a run whose flow run the embedded mode created
    before the switch to workers comes back too, with no deployment.
    """
    from flows.actions import action_flow

    body = DeploymentFlowRunCreate(parameters=action_flow.serialize_parameters(parameters), tags=tags, name=name,
                                   idempotency_key=idempotency_key, state=to_state_create(Scheduled()))
    response = client.request("POST", "/deployments/{id}/create_flow_run",  # type: ignore[arg-type]
                              path_params={"id": deployment},
                              json=body.model_dump(mode="json", exclude_unset=True))
    return FlowRun.model_validate(response.json()), response.status_code == 201


def needs_dispatch(flow_run: FlowRun, *, now: datetime | None = None,
                   grace: timedelta = WORKER_START_GRACE) -> bool:
    """Whether a due action run's existing flow run must be scheduled again for a worker to take it.

    Yes when it ended (its attempt failed, or it found the run not claimable
    then); and when a worker took it (``Pending``) or started it
    (``Running``) more than ``grace`` ago while the run is still due: the
    worker died before its flow run claimed the run, or its flow run died
    after the attempt ended and before it told Prefect. ``Scheduled``: a
    worker will take it (none is running, perhaps).
    """
    state = flow_run.state_type
    if state is None or state in _FINAL:
        return True
    if state in (StateType.PENDING, StateType.RUNNING):
        since = flow_run.state.timestamp if flow_run.state is not None else None
        return since is not None and (now or datetime.now(timezone.utc)) - since >= grace
    return False


def reschedule(client: SyncPrefectClient, flow_run: FlowRun, parameters: dict[str, Any]) -> None:
    """Schedule ``flow_run`` again, for now, with these parameters (the new tick's time and lease holder)."""
    from flows.actions import action_flow

    client.update_flow_run(flow_run.id, parameters=action_flow.serialize_parameters(parameters))
    client.set_flow_run_state(flow_run.id, Scheduled(message="the action run is due again"), force=True)
