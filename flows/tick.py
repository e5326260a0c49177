"""The tick flow: one Prefect flow run per tick, one task per stage, one flow run per action run.

(No ``from __future__ import annotations`` in flow modules: Prefect builds each flow's parameter model
from its annotations when it loads the flow by entrypoint, and string annotations fail there.)

Who calls it: ``mape tick`` (one run, in-process), ``mape run`` (served on an
interval by :mod:`flows.serve`), the demo and the tests.

Each due action runs as a flow run of its own, created under the action
run's idempotency key (:func:`flows.actions.start_action`); the tick starts by
reconciling the action runs and flow runs (tick runs included) a killed
process left behind.

A tick's flow run names its knowledge base and the process that runs it in
its tags from the moment Prefect creates it, so a process killed a
millisecond after the creation still leaves a run the next tick can tell was
abandoned (and marks ``CRASHED``): calling :data:`tick_flow` (``mape tick``,
the demo) creates the run inside :func:`prefect.tags` with both
(:class:`TickFlow`); a run the served deployment of ``mape run`` creates gets
the knowledge base and the serving process from the deployment's tags
(:func:`flows.serve.tick_deployment`), and names its own process once it runs
(:func:`_tag_this_run`).

The logical time of a tick is ``at`` if given, else the flow run's scheduled
start time, else now; so a Prefect retry of a scheduled run repeats the same
tick, which the controller recognises and does not sense or plan twice.
"""


import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from prefect import Flow, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.callables import get_call_parameters

from flows.actions import start_action
from flows.controllers import controller_for
from flows.prefect_runs import PrefectFlowRuns, knowledge_base_tag, process_tag
from knowledge import queries
from knowledge.database import session_scope
from mape._util.timeutil import ensure_utc
from mape.controller import Controller
from mape.execute.claims import this_process

log = logging.getLogger(__name__)


def _as_task(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    return task(fn, name=name, cache_policy=NO_CACHE, log_prints=False)


class TickFlow(Flow[..., dict[str, Any]]):
    """The tick flow: calling it creates its flow run already tagged with the knowledge base and this process.

    Prefect applies the tags of the :func:`prefect.tags` context to a flow run
    when it creates it, before the flow's function runs; so there is no moment
    at which the run exists untagged. A run created otherwise (from the
    served deployment) is run by Prefect's engine directly, not through this
    call, and carries the deployment's tags instead.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        parameters = get_call_parameters(self.fn, args, kwargs)
        with tags(*creation_tags(parameters.get("config_file"))):
            return super().__call__(*args, **kwargs)


def creation_tags(config_file: str | None) -> list[str]:
    """The tags a tick run of this process is created with: its knowledge base's and this process's.

    None at all when the controller cannot be built (its flow run then fails
    the same way, and says why) or reconciles no Prefect flow runs.
    """
    try:
        controller = controller_for(config_file)
        if not isinstance(controller.flow_runs, PrefectFlowRuns):
            return []
        with session_scope(controller.engine) as session:
            instance = queries.knowledge_base_id(session)
    except Exception as exc:  # noqa: BLE001 - the flow run reports the failure; the tags only help reconciliation
        log.warning("tick flow run created without tags: %s: %s", type(exc).__name__, exc)
        return []
    return [knowledge_base_tag(instance), process_tag(str(this_process()))]


def _tick_flow(**options: Any) -> Callable[[Callable[..., dict[str, Any]]], TickFlow]:
    """Like :func:`prefect.flow`, but the flow is a :class:`TickFlow`."""
    return lambda fn: TickFlow(fn=fn, **options)


@_tick_flow(name="mape-tick", log_prints=False)
def tick_flow(config_file: str | None = None, at: datetime | None = None) -> dict[str, Any]:
    """Run one tick of the MAPE-K loop and return its report as plain data."""
    controller = controller_for(config_file)
    _tag_this_run(controller)
    if at is None:
        scheduled = flow_run.scheduled_start_time
        at = scheduled if scheduled is not None else controller.clock()
    # a plain datetime: Prefect's scheduled time is a pendulum DateTime, whose sum with a timedelta drops the zone
    at = ensure_utc(at)
    at = datetime(at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond, tzinfo=timezone.utc)

    def run_action(run_id: int, when: datetime) -> None:
        start_action(controller, run_id, when, config_file)

    report = controller.tick(at, wrap=_as_task, run_action=run_action,
                             flow_run_id=str(flow_run.id) if flow_run.id else None)
    return report.model_dump(mode="json")


def _tag_this_run(controller: Controller) -> None:
    """Name this tick's process (and knowledge base) on its flow run, unless it was created with both.

    A run the served deployment created carries the knowledge base and the
    serving process from its creation; this adds the process that runs it.
    """
    if flow_run.id is None or not isinstance(controller.flow_runs, PrefectFlowRuns):
        return
    try:
        with session_scope(controller.engine) as session:
            instance = queries.knowledge_base_id(session)
        wanted = [knowledge_base_tag(instance), process_tag(str(this_process()))]
        if set(wanted) <= set(flow_run.tags or ()):
            return  # created with them (a call of tick_flow): nothing to add
        controller.flow_runs.tag(str(flow_run.id), wanted)
    except Exception as exc:  # noqa: BLE001 - an untagged tick still runs; its serving process names it meanwhile
        log.warning("could not tag tick flow run %s: %s: %s", flow_run.id, type(exc).__name__, exc)
