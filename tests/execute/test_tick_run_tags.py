"""A tick flow run abandoned the moment it started is found and marked crashed: its tags are given at its creation.

Against the session's real Prefect server (``prefect_server``). A tick run
names its knowledge base and the process answering for it from the moment
Prefect creates it, so a process killed before the tick's body ran still
leaves a run the next controller recognises as its own and abandoned:

* ``tick_flow(...)`` called in a process (``mape tick``) is created inside
  :func:`prefect.tags` with the knowledge base's and the process's tags; the
  child process here is killed by Prefect's own ``on_running`` hook, once the
  run is ``RUNNING`` and before the flow's function starts;
* a run the served deployment creates (``mape run``) gets the knowledge base
  and the serving process from the deployment's tags; while it has not named
  its own process, the serving process answers for it (after a grace period,
  and only once it is ``PENDING`` or ``RUNNING``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from sqlmodel import select

from flows.prefect_runs import TICK_FLOW, PrefectFlowRuns, knowledge_base_tag, process_tag, read_all, supervisor_tag
from knowledge import queries
from knowledge.database import session_scope
from knowledge.tables import AuditEvent
from mape.config import load_settings
from mape.controller import Controller
from mape.execute.claims import this_process

pytestmark = pytest.mark.slow  # a real Prefect server and controller processes

REPO = Path(__file__).resolve().parents[2]

#: A tick in a process of its own, killed by the flow's own ``on_running`` hook: before its function runs.
KILLED_WHEN_RUNNING = """
import os, signal, sys
from flows.tick import tick_flow
tick_flow.on_running_hooks.append(lambda flow, flow_run, state: os.kill(os.getpid(), signal.SIGKILL))
tick_flow(config_file=sys.argv[1])
sys.exit(3)
"""
#: The deployment ``mape run`` serves, registered by a process that then exits (a serving process that died).
DEPLOY_AND_EXIT = """
import sys
from datetime import timedelta
from flows.serve import tick_deployment
print(tick_deployment(sys.argv[1], interval=timedelta(days=30), name=sys.argv[2]).apply())
"""


@pytest.fixture
def config(tmp_path: Path, prefect_server: None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A configuration with its own SQLite knowledge base, and the environment of a controller process."""
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "policies").mkdir()
    path = tmp_path / "mape.yaml"
    source = {"kind": "parquet", "path": str(tmp_path / "no-such-log.parquet")}
    path.write_text(yaml.safe_dump({
        "db_url": f"sqlite:///{tmp_path / 'mape.db'}", "policies_dir": str(tmp_path / "policies"),
        "artifacts_dir": str(tmp_path / "artifacts"), "serving_dir": str(tmp_path / "serving"),
        "controller_id": "tick-tags-test", "energy_metering": False,
        "models": [{"name": "m0", "features": {"numeric": ["x"]}, "inference": source, "labels_source": source,
                    "training": {"entrypoint": "examples.credit.model:train"}}],
    }, sort_keys=False))
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(REPO),
           "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    yield path, env


def _python(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def _controller(path: Path, **flow_runs: Any) -> Controller:
    return Controller(load_settings(str(path)), flow_runs=PrefectFlowRuns(**flow_runs))


def _instance(controller: Controller) -> str:
    with session_scope(controller.engine) as session:
        return queries.knowledge_base_id(session)


def _ticks(instance: str) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return read_all(client, limit=100, flow_filter=FlowFilter(name=FlowFilterName(any_=[TICK_FLOW])),
                        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[knowledge_base_tag(instance)])))


def _state(flow_run_id: Any) -> Any:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(flow_run_id))).state


def _tick_events(controller: Controller) -> list[AuditEvent]:
    with session_scope(controller.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.kind == "tick.reconciled")))


def test_a_tick_killed_before_its_body_ran_is_tagged_from_creation_and_marked_crashed(config):
    path, env = config
    killed = _python(KILLED_WHEN_RUNNING, str(path), env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]

    controller = _controller(path)
    instance = _instance(controller)
    (run,) = _ticks(instance)
    assert run.state_type.value == "RUNNING"
    # the function never ran, so these came with the run's creation: the knowledge base and the killed process
    (process,) = [t[len(process_tag("")):] for t in run.tags if t.startswith(process_tag(""))]
    assert knowledge_base_tag(instance) in run.tags and process != str(this_process())

    report = controller.reconcile(datetime.now(timezone.utc))
    assert f"tick flow run {run.id}: RUNNING -> CRASHED" in report["reconciled"]
    state = _state(run.id)
    assert state.type.value == "CRASHED"
    assert state.message == f"the process that ran or served this tick ({process}) is gone"
    (event,) = _tick_events(controller)
    assert (event.payload["flow_run_id"], event.payload["process"]) == (str(run.id), process)
    # once
    assert not any("tick flow run" in line for line in controller.reconcile(datetime.now(timezone.utc))["reconciled"])


def test_a_served_tick_that_never_named_its_process_is_crashed_once_its_serving_process_is_gone(config, tmp_path):
    from prefect import get_client
    from prefect.states import Running

    path, env = config
    deployed = _python(DEPLOY_AND_EXIT, str(path), f"ticks-{tmp_path.name}", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    deployment_id = UUID(deployed.stdout.strip().splitlines()[-1])
    controller = _controller(path)
    instance = _instance(controller)
    with get_client(sync_client=True) as client:
        running = client.create_flow_run_from_deployment(deployment_id)
        waiting = client.create_flow_run_from_deployment(deployment_id)
        client.set_flow_run_state(running.id, Running(), force=True)  # its process died before it named itself
    served_by = [t for t in running.tags if t.startswith(supervisor_tag(""))]
    assert knowledge_base_tag(instance) in running.tags and len(served_by) == 1
    assert not any(t.startswith(process_tag("")) for t in running.tags)

    # within the grace period the run may still be naming its process: left alone
    assert controller.reconcile(datetime.now(timezone.utc))["reconciled"] == []
    assert _state(running.id).type.value == "RUNNING"

    later = _controller(path, untagged_grace=timedelta(0))
    report = later.reconcile(datetime.now(timezone.utc))
    assert report["reconciled"] == [f"tick flow run {running.id}: RUNNING -> CRASHED"]
    assert _state(running.id).type.value == "CRASHED"
    assert _state(waiting.id).type.value == "SCHEDULED"  # nobody runs it yet: nothing to answer for


def test_a_served_tick_whose_serving_process_lives_is_left_to_it(config, tmp_path):
    from prefect import get_client
    from prefect.states import Cancelled, Running

    from flows.serve import tick_deployment

    path, _ = config
    deployment_id = tick_deployment(str(path), interval=timedelta(days=30), name=f"live-{tmp_path.name}").apply()
    controller = _controller(path, untagged_grace=timedelta(0))
    with get_client(sync_client=True) as client:
        running = client.create_flow_run_from_deployment(deployment_id)
        client.set_flow_run_state(running.id, Running(), force=True)
    assert supervisor_tag(str(this_process())) in running.tags
    assert controller.reconcile(datetime.now(timezone.utc))["reconciled"] == []
    assert _state(running.id).type.value == "RUNNING"
    with get_client(sync_client=True) as client:  # done with it
        client.set_flow_run_state(running.id, Cancelled(), force=True)
