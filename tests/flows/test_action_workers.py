"""Action runs on Prefect workers: the tick hands each due run to a process work pool, a worker runs it once.

Real components throughout: a Prefect server with its services (``prefect
server start`` on a free loopback port), Prefect's own process worker
(``prefect worker start --pool ... --type process``, a subprocess), the
knowledge base on SQLite and on PostgreSQL, ``mape workers deploy`` and the
tick flow (``flows.tick.tick_flow``) in this process with
``prefect.action_work_pool`` set. The action is the crash test's plugin: it
works a while, registers a version and writes an effect file per idempotency
key, once.

What is checked: with no worker running, ticks leave a person's request
``pending`` and create its flow run once (``Scheduled``, of the pool's
deployment); once a worker starts, the run succeeds in one attempt claimed by
the worker's flow-run process (the pid Prefect records as the flow run's
infrastructure), the flow run ends ``Completed``, and a later tick creates no
second flow run. Then a worker is SIGKILLed with its flow-run process while
that runs an attempt: the next tick reconciles the lost attempt (the claimer
is gone), marks the flow run ``Crashed`` and schedules it again; a new worker
runs the second attempt on the same flow run, and the effect is applied once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import select
from typer.testing import CliRunner

from knowledge import queries, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.tables import ActionRun, Decision, ModelVersion
from mape.execute.claims import Claimer, alive
from tests.e2e.test_crash_recovery import _install_plugin

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
POOL = "mape-actions-test"
MODEL = "m0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crash test's action plugin, installed once for the module (its entry point registers ``crash-work``)."""
    path = tmp_path_factory.mktemp("site")
    _install_plugin(path)
    return path


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server with its services, and this process's Prefect client pointed at it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import local_prefect_server

    with local_prefect_server(port=_free_port(), home=tmp_path_factory.mktemp("prefect")) as url:
        with temporary_settings({PREFECT_API_URL: url}):
            yield url


def _config(directory: Path, db_url: str) -> Path:
    source = {"kind": "parquet", "path": str(directory / "no-such-log.parquet")}
    (directory / "policies").mkdir()
    config = directory / "mape.yaml"
    config.write_text(yaml.safe_dump({
        "db_url": db_url, "policies_dir": str(directory / "policies"),
        "artifacts_dir": str(directory / "artifacts"), "serving_dir": str(directory / "serving"),
        "controller_id": "controller-under-test", "energy_metering": False, "metrics": {"enabled": False},
        "prefect": {"action_work_pool": POOL},
        "models": [{"name": MODEL, "features": {"numeric": ["x"]}, "inference": source, "labels_source": source,
                    "training": {"entrypoint": "examples.credit.model:train"}}],
    }, sort_keys=False))
    return config


def _request(engine: Engine, n: int, seconds: float) -> int:
    """A person's approved request of the plugin's action (as ``mape actions request`` records it); its id."""
    now = datetime.now(timezone.utc)
    with session_scope(engine) as session:
        model = registry.get_model(session, MODEL)
        decision = Decision(created_at=now, model_id=model.id, policy_name="manual", action="crash-work",
                            params={"seconds": seconds}, status="approved", reason=f"worker test {n}",
                            actor="tester", decided_by="tester", decided_at=now, dedup_key=f"workers/{n}")
        session.add(decision)
        session.flush()
        assert decision.id is not None
        return decision.id


def _run(engine: Engine, decision_id: int) -> ActionRun:
    with session_scope(engine) as session:
        run = session.exec(select(ActionRun).where(ActionRun.decision_id == decision_id)).one()
        session.expunge(run)
        return run


def _flow_runs(engine: Engine) -> list[Any]:
    """Every action flow run of this knowledge base, on the Prefect server."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.prefect_runs import ACTION_FLOW, knowledge_base_tag

    with session_scope(engine) as session:
        instance = queries.knowledge_base_id(session)
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[ACTION_FLOW])),
                                     flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(
                                         all_=[knowledge_base_tag(instance)])),
                                     limit=50, sort=FlowRunSort.ID_DESC)


def _tick(config: Path) -> dict[str, Any]:
    from flows.tick import tick_flow

    return tick_flow(config_file=str(config))


class Worker:
    """``prefect worker start --pool POOL --type process``, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.log = log
        prefect = str(Path(sys.executable).parent / "prefect")
        self.process = subprocess.Popen(
            [prefect, "worker", "start", "--pool", POOL, "--type", "process", "--name", name],
            cwd=log.parent, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True)

    def check(self) -> None:
        assert self.process.poll() is None, f"the worker exited: {self.log.read_text()[-4000:]}"

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _wait(what: str, timeout: float, check: Callable[[], bool], worker: Worker | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if worker is not None:
            worker.check()
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s" + (
            f"; worker log: {worker.log.read_text()[-4000:]}" if worker is not None else "")
        time.sleep(0.5)


@pytest.mark.timeout(900)
def test_a_worker_runs_each_action_once_and_a_killed_workers_attempt_is_retried(
        tmp_path: Path, db_url: str, site: Path, api_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import get_client

    from flows.workers import deployment_name
    from mape.cli import app

    monkeypatch.syspath_prepend(str(site))  # the tick's controller registers the plugin's action type
    monkeypatch.setenv("CRASH_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    (tmp_path / "effects").mkdir()
    config = _config(tmp_path, db_url)
    engine = create_engine_for(db_url)
    with session_scope(engine) as session:
        registry.upsert_model(session, name=MODEL)
    env = {**os.environ, "PREFECT_API_URL": api_url, "CRASH_TEST_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    workers: list[Worker] = []
    try:
        deployed = CliRunner().invoke(app, ["workers", "deploy", "--config", str(config)])
        assert deployed.exit_code == 0, deployed.output
        assert deployment_name(POOL) in deployed.output
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(deployment_name(POOL))
            assert client.read_work_pool(POOL).type == "process"
        assert deployment.work_pool_name == POOL and deployment.entrypoint == "flows/actions.py:action_flow"

        # no worker: the tick hands the run to the pool and leaves it pending, once
        first = _request(engine, 1, seconds=0.3)
        _tick(config)
        _tick(config)
        run = _run(engine, first)
        assert run.state == "pending" and run.attempts == 0 and run.claimed_by is None
        (flow_run,) = _flow_runs(engine)
        assert flow_run.deployment_id == deployment.id and flow_run.state_type.value == "SCHEDULED"
        assert not (tmp_path / "effects.log").exists()

        # a worker starts: its flow-run process claims and runs the attempt
        workers.append(Worker(env, tmp_path / "worker-1.log", "w1"))
        started = time.monotonic()
        _wait("the worker ran the first request", 240, lambda: _run(engine, first).state == "succeeded", workers[0])
        print(f"worker start to the first action's success: {time.monotonic() - started:.1f} s")
        run = _run(engine, first)
        claimer = Claimer.parse(run.claimed_by)
        assert claimer is not None and claimer.pid != os.getpid() and run.attempts == 1
        _wait("the worker reported the flow run", 60,
              lambda: _flow_runs(engine)[0].state_type.value == "COMPLETED", workers[0])
        (done,) = _flow_runs(engine)
        assert done.id == flow_run.id == _uuid(run.flow_run_id) and done.work_pool_name == POOL
        assert done.infrastructure_pid is not None  # the worker's flow-run process ("pid" or "host:pid")
        assert done.infrastructure_pid.rsplit(":", 1)[-1] == str(claimer.pid)
        report = _tick(config)  # a later tick: nothing to hand over, nothing to reconcile
        assert report["reconciled"] == [] and len(_flow_runs(engine)) == 1

        # a worker killed with its flow-run process in the middle of an attempt
        second = _request(engine, 2, seconds=8)
        _tick(config)
        handed = time.monotonic()
        _wait("the worker claimed the second request", 120, lambda: _run(engine, second).state == "running",
              workers[0])
        print(f"hand-over to claim by a running worker: {time.monotonic() - handed:.1f} s")
        victim = Claimer.parse(_run(engine, second).claimed_by)
        assert victim is not None
        workers[0].kill()
        os.kill(victim.pid, signal.SIGKILL)
        _wait("the flow-run process died", 30, lambda: alive(victim) is False)
        report = _tick(config)
        assert any("was lost" in line and "is gone" in line for line in report["reconciled"]), report["reconciled"]
        second_flow = next(f for f in _flow_runs(engine) if f.id != flow_run.id)
        assert second_flow.state_type.value == "SCHEDULED"  # crashed, then handed to the pool again
        assert _run(engine, second).state == "pending"
        workers.append(Worker(env, tmp_path / "worker-2.log", "w2"))
        _wait("a new worker ran the second request", 240, lambda: _run(engine, second).state == "succeeded",
              workers[1])
        _wait("the new worker reported it", 60, lambda: all(
            f.state_type.value == "COMPLETED" for f in _flow_runs(engine)), workers[1])
        run = _run(engine, second)
        assert run.attempts == 2 and _uuid(run.flow_run_id) == second_flow.id
        assert len(_flow_runs(engine)) == 2  # one flow run per action run, every attempt included
    finally:
        for worker in workers:
            worker.kill()
    with session_scope(engine) as session:
        versions = [v.created_by_action_run_id for v in session.exec(select(ModelVersion))]
    runs = {d: _run(engine, d) for d in (first, second)}
    assert sorted(versions) == sorted(r.id for r in runs.values())  # one committed version per run
    applied = [line.split()[1] for line in (tmp_path / "effects.log").read_text().splitlines()
               if line.startswith("applied ")]
    assert sorted(applied) == sorted(r.idempotency_key for r in runs.values())  # each effect once
    engine.dispose()


def _uuid(text: str | None) -> Any:
    from uuid import UUID

    return UUID(text) if text else None
