"""The tick flow: one Prefect flow run per tick, one task per stage, one flow run per action run.

(No ``from __future__ import annotations`` in flow modules: Prefect builds each flow's parameter model
from its annotations when it loads the flow by entrypoint, and string annotations fail there.)

Who calls it: ``mape tick`` (one run, in-process), ``mape run`` (served on an
interval by :mod:`flows.serve`), the demo and the tests.

Each due action runs as a flow run of its own, created under the action
run's idempotency key (:func:`flows.actions.start_action`); the tick tags its
own flow run with its knowledge base and process, and starts by reconciling
the action runs and flow runs (tick runs included) a killed process left
behind.

The logical time of a tick is ``at`` if given, else the flow run's scheduled
start time, else now; so a Prefect retry of a scheduled run repeats the same
tick, which the controller recognises and does not sense or plan twice.
"""


import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

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


@flow(name="mape-tick", log_prints=False)
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
    """Name this tick's knowledge base and process on its flow run, so that a later tick can tell it was killed.

    (A process killed before this leaves its run untagged, and ``RUNNING``.)
    """
    if flow_run.id is None or not isinstance(controller.flow_runs, PrefectFlowRuns):
        return
    try:
        with session_scope(controller.engine) as session:
            instance = queries.knowledge_base_id(session)
        controller.flow_runs.tag(str(flow_run.id), [knowledge_base_tag(instance), process_tag(str(this_process()))])
    except Exception as exc:  # noqa: BLE001 - an untagged tick still runs; only its crash would go unnoticed
        log.warning("could not tag tick flow run %s: %s: %s", flow_run.id, type(exc).__name__, exc)
