"""Prefect's side of the action runs: flow runs created under the run's idempotency key, read and corrected.

Who calls it: :func:`flows.actions.start_action` creates (or finds) an action
run's flow run with :func:`ensure_flow_run`; the controller built by
:mod:`flows.controllers` reconciles through :class:`PrefectFlowRuns`
(:mod:`mape.execute.reconcile`) at the start of every tick.

Prefect's server honours an idempotency key on ``POST /flow_runs/``: a second
create with the same flow and key returns the first flow run (status 200
instead of 201). ``PrefectClient.create_flow_run`` does not pass a key
(Prefect 3.8.8; only deployment runs take one), so :func:`ensure_flow_run`
posts the documented ``FlowRunCreate`` body itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from prefect import Flow, get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import FlowRunCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelled, Completed, Crashed, Failed, Pending, State, to_state_create

__all__ = ["ACTION_FLOW", "PAGE", "TICK_FLOW", "UNTAGGED_GRACE", "WORKER_START_GRACE", "PrefectFlowRuns",
           "ensure_flow_run", "knowledge_base_tag", "process_tag", "read_all", "supervisor_tag"]

#: The name of the action flow (:func:`flows.actions.action_flow`).
ACTION_FLOW = "mape-action"
#: The name of the tick flow (:func:`flows.tick.tick_flow`).
TICK_FLOW = "mape-tick"
_KB_TAG = "mape-kb:"
_PROCESS_TAG = "mape-process:"
_SUPERVISOR_TAG = "mape-served-by:"
#: How long a served tick run may run before it names its own process; until then its serving process answers for it.
UNTAGGED_GRACE = timedelta(seconds=60)
#: How long a worker's action flow run (one of a deployment) may be ``Running`` before it claims its run
#: (:mod:`flows.workers`); until then reconciliation counts it as starting (``PENDING``).
WORKER_START_GRACE = timedelta(minutes=10)


def knowledge_base_tag(knowledge_base: str) -> str:
    """The tag on every flow run of one knowledge base: reconciliation reads only its own (a server may serve many)."""
    return f"{_KB_TAG}{knowledge_base}"


def process_tag(process: str) -> str:
    """The tag naming the process that runs a tick (:class:`mape.execute.claims.Claimer`'s text)."""
    return f"{_PROCESS_TAG}{process}"


def supervisor_tag(process: str) -> str:
    """The tag naming the process that serves the tick deployment (``mape run``), on each run it creates.

    Prefect's runner in that process starts each tick in a process of its
    own and marks it crashed if that process dies; if the serving process
    dies too, nobody does, and a run that had not named its own process yet
    is told abandoned by this tag.
    """
    return f"{_SUPERVISOR_TAG}{process}"
#: The most flow runs Prefect's API returns for one filter request.
PAGE = 200
_UNFINISHED = [StateType.PENDING, StateType.SCHEDULED, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]


def ensure_flow_run(client: SyncPrefectClient, flow: Flow[Any, Any], *, idempotency_key: str, name: str,
                    parameters: dict[str, Any], tags: Iterable[str] = ()) -> tuple[FlowRun, bool]:
    """The flow run of ``flow`` with this idempotency key, created ``Pending`` if Prefect has none; and whether it is new."""
    flow_id = client.create_flow(flow)
    body = FlowRunCreate(flow_id=flow_id, flow_version=flow.version, name=name,
                         parameters=flow.serialize_parameters(parameters), tags=list(tags),
                         idempotency_key=idempotency_key, state=to_state_create(Pending()))
    response = client.request("POST", "/flow_runs/", json=body.model_dump(mode="json", exclude_unset=True))
    return FlowRun.model_validate(response.json()), response.status_code == 201


class PrefectFlowRuns:
    """The action flow runs on the Prefect API of this process's settings (``PREFECT_API_URL``).

    Parameters
    ----------
    flow_name : str
        Name of the action flow.
    limit : int
        At most this many unfinished flow runs are read per reconciliation
        (in pages of :data:`PAGE`, the most Prefect's API returns at once).
    """

    def __init__(self, flow_name: str = ACTION_FLOW, *, limit: int = 1000,
                 untagged_grace: timedelta = UNTAGGED_GRACE) -> None:
        self.flow_name = flow_name
        self.limit = limit
        self.untagged_grace = untagged_grace

    def __repr__(self) -> str:
        return f"PrefectFlowRuns(flow_name={self.flow_name!r})"

    def states(self, flow_run_ids: Collection[str]) -> dict[str, str]:
        ids = [UUID(i) for i in flow_run_ids]
        found: dict[str, str] = {}
        with get_client(sync_client=True) as client:
            for start in range(0, len(ids), PAGE):
                chunk = ids[start:start + PAGE]
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                                             limit=len(chunk), sort=FlowRunSort.ID_DESC)
                found.update({str(r.id): r.state_type.value for r in runs if r.state_type is not None})
        return found

    def unfinished(self, knowledge_base: str | None = None) -> dict[str, str]:
        """Unfinished action flow runs by id; a worker's run ``Running`` for under :data:`WORKER_START_GRACE` is ``PENDING``.

        A worker's flow run (:mod:`flows.workers`) is ``Running`` before it
        claims its action run, which is ``pending`` meanwhile: not a
        disagreement to correct.
        """
        runs = self._unfinished(self.flow_name, knowledge_base)
        now = datetime.now(timezone.utc)
        return {str(r.id): "PENDING" if _starting(r, now) else r.state_type.value
                for r in runs if r.state_type is not None}

    def unfinished_ticks(self, knowledge_base: str) -> dict[str, str | None]:
        """The knowledge base's unfinished tick flow runs, by id: the process answering for each (None: unknown).

        That is the process the run names (a call of the tick flow names it
        from the run's creation, a served run once it runs); else, for a run
        of the served deployment that has been ``PENDING`` or ``RUNNING`` for
        longer than ``untagged_grace`` without naming one, the process that
        serves the deployment (its ``mape-served-by:`` tag from the
        deployment). A run that is only scheduled has nobody to answer for it.
        """
        now = datetime.now(timezone.utc)
        found: dict[str, str | None] = {}
        for run in self._unfinished(TICK_FLOW, knowledge_base):
            process = _tagged(run.tags, _PROCESS_TAG)
            if process is None and run.state_type in (StateType.PENDING, StateType.RUNNING):
                since = run.state.timestamp if run.state is not None else None
                if since is not None and now - since >= self.untagged_grace:
                    process = _tagged(run.tags, _SUPERVISOR_TAG)
            found[str(run.id)] = process
        return found

    def tag(self, flow_run_id: str, tags: Collection[str]) -> None:
        """Add ``tags`` to a flow run (a tick tags its own run with its knowledge base and process)."""
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            client.update_flow_run(UUID(flow_run_id), tags=sorted({*run.tags, *tags}))

    def _unfinished(self, flow_name: str, knowledge_base: str | None) -> list[FlowRun]:
        tags = None if knowledge_base is None else FlowRunFilterTags(all_=[knowledge_base_tag(knowledge_base)])
        with get_client(sync_client=True) as client:
            return read_all(client, limit=self.limit, flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                            flow_run_filter=FlowRunFilter(
                                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_UNFINISHED)), tags=tags))

    def mark(self, flow_run_id: str, state: str, message: str) -> None:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(flow_run_id), _state(state, message), force=True)


def _starting(run: FlowRun, now: datetime) -> bool:
    """A worker's flow run that started less than :data:`WORKER_START_GRACE` ago (it may not have claimed yet)."""
    since = run.state.timestamp if run.state is not None else None
    return (run.deployment_id is not None and run.state_type == StateType.RUNNING and since is not None
            and now - since < WORKER_START_GRACE)


def _tagged(run_tags: Iterable[str], prefix: str) -> str | None:
    """The value of the first tag with ``prefix``, or None."""
    return next((t[len(prefix):] for t in run_tags if t.startswith(prefix)), None)


def read_all(client: SyncPrefectClient, *, limit: int, **filters: Any) -> list[FlowRun]:
    """Up to ``limit`` flow runs matching ``filters`` (``read_flow_runs``' keywords), newest first, page by page."""
    runs: list[FlowRun] = []
    while len(runs) < limit:
        page = client.read_flow_runs(**filters, limit=min(PAGE, limit - len(runs)), offset=len(runs),
                                     sort=FlowRunSort.ID_DESC)
        runs.extend(page)
        if len(page) < PAGE:
            break
    return runs


def _state(name: str, message: str) -> State[Any]:
    """A Prefect state for one of :func:`mape.execute.reconcile.flow_state_for`'s answers."""
    message = message[:2000]
    if name == "COMPLETED":
        return Completed(message=message)
    if name == "CANCELLED":
        return Cancelled(message=message)
    if name == "CRASHED":
        return Crashed(message=message)
    if name == "TimedOut":
        return Failed(name="TimedOut", message=message)
    return Failed(message=message)
