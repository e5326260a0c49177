"""Scale-out: three ``mape run`` controllers share a fleet on PostgreSQL and one Prefect server; one is SIGKILLed.

Real processes throughout: a Prefect server (``prefect server start``, with its
scheduler) whose own database is a fresh PostgreSQL database, three controllers (``mape run``, each with its own
``controller_id``, leases on: 15 s, renewed every 10 s) and the PostgreSQL on
127.0.0.1:5432. The action is the crash test's plugin: it works a while,
registers a version (committed with the run's success) and writes an effect
file named by the run's idempotency key, once.

What is checked: the three split the six models two each; a person's
requests run on the controller that holds the model; after one controller's
whole process group is SIGKILLed (a dead pod: its ticks and actions die with
it), the two others hold all six models within 30 s (measured from the kill);
every requested action then succeeds exactly once (one run per decision, one
version per run, one effect per key, none lost), including the one the dead
controller was running; and SIGTERM stops the survivors cleanly, handing their
leases back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from knowledge import leases, registry
from knowledge.database import create_engine_for, session_scope
from knowledge.migrate import upgrade
from knowledge.tables import ActionRun, AuditEvent, Decision, ModelVersion
from tests.conftest import _fresh_pg_database
from tests.e2e.test_crash_recovery import _install_plugin

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
MODELS = [f"m{i}" for i in range(6)]
CONTROLLERS = ["c1", "c2", "c3"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(directory: Path, db_url: str) -> Path:
    source = {"kind": "parquet", "path": str(directory / "no-such-log.parquet")}
    model = {"features": {"numeric": ["x"]}, "inference": source, "labels_source": source,
             "training": {"entrypoint": "examples.credit.model:train"}}
    (directory / "policies").mkdir()
    config = directory / "mape.yaml"
    config.write_text(yaml.safe_dump({
        "db_url": db_url, "policies_dir": str(directory / "policies"), "tick_interval": "5s",
        "artifacts_dir": str(directory / "artifacts"), "serving_dir": str(directory / "serving"),
        "energy_metering": False, "metrics": {"enabled": False},
        "leases": {"enabled": True, "duration": "15s", "renew_every": "10s"},
        "models": [{"name": name, **model} for name in MODELS],
    }, sort_keys=False))
    return config


def _request(engine, model: str, n: int, seconds: float) -> None:
    now = datetime.now(timezone.utc)
    with session_scope(engine) as session:
        row = registry.get_model(session, model)
        session.add(Decision(created_at=now, model_id=row.id, policy_name="manual", action="crash-work",
                             params={"seconds": seconds}, status="approved", reason=f"scale-out test {n}",
                             actor="tester", decided_by="tester", decided_at=now, dedup_key=f"scale-out/{n}"))


def _holders(engine) -> dict[int, str]:
    now = datetime.now(timezone.utc)
    with session_scope(engine) as session:
        return {row.model_id: row.holder for row in leases.leases(session) if row.holder and row.expires_at > now}


def _wait(what: str, timeout: float, check, processes) -> float:
    start = time.monotonic()
    while not check():
        for name, process in processes.items():
            assert process.poll() is None, f"controller {name} exited: {process.stdout.read()}"
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.25)
    return time.monotonic() - start


@pytest.mark.timeout(900)
def test_a_dead_controllers_models_are_taken_within_30_s_and_no_action_runs_twice(tmp_path: Path, db_url: str):
    if db_url.startswith("sqlite"):
        pytest.skip("scale-out runs on PostgreSQL")
    from flows.serve import local_prefect_server

    site = tmp_path / "site"
    _install_plugin(site)
    (tmp_path / "effects").mkdir()
    config = _config(tmp_path, db_url)
    upgrade(db_url)
    engine = create_engine_for(db_url)
    with session_scope(engine) as session:
        for name in MODELS:
            registry.upsert_model(session, name=name)
        ids = {name: registry.get_model(session, name).id for name in MODELS}
    processes: dict[str, subprocess.Popen] = {}
    prefect_database = _fresh_pg_database(db_url.rsplit("/", 1)[0] + "/postgres")
    prefect_url = next(prefect_database)  # Prefect's own database: PostgreSQL too, as in production
    server = local_prefect_server(port=_free_port(), home=tmp_path / "prefect", environment={
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_url.replace("+psycopg", "+asyncpg")})
    with server as api_url:
        env = {**os.environ, "PREFECT_API_URL": api_url, "CRASH_TEST_DIR": str(tmp_path),
               "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "PREFECT_LOGGING_LEVEL": "WARNING",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        mape = str(Path(sys.executable).parent / "mape")
        try:
            for name in CONTROLLERS:
                processes[name] = subprocess.Popen(
                    [mape, "run", "--config", str(config)], cwd=tmp_path, env={**env, "MAPE_CONTROLLER_ID": name},
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            _wait("the three controllers split the fleet", 180,
                  lambda: sorted(Counter(_holders(engine).values()).values()) == [2, 2, 2], processes)

            # a person's requests, two per model: each runs on the model's holder
            for n, model in enumerate(MODELS * 2):
                _request(engine, model, n, seconds=1.5)
            victim = "c1"
            theirs = sorted(m for m, holder in _holders(engine).items() if holder == victim)

            def victim_running() -> bool:
                with session_scope(engine) as session:
                    return session.exec(select(ActionRun).where(ActionRun.state == "running", ActionRun.model_id.in_(
                        theirs))).first() is not None  # type: ignore[attr-defined]

            _wait("the victim started one of its actions", 180, victim_running, processes)
            os.killpg(processes[victim].pid, signal.SIGKILL)  # the pod dies: serve process, ticks and actions
            killed = time.monotonic()
            processes.pop(victim).wait()
            _wait("the survivors held all six models", 60,
                  lambda: sorted(_holders(engine)) == sorted(ids.values())
                  and victim not in _holders(engine).values(), processes)
            takeover = time.monotonic() - killed
            for n, model in enumerate(MODELS, start=len(MODELS) * 2):  # and more work after the takeover
                _request(engine, model, n, seconds=0.5)

            def all_done() -> bool:
                with session_scope(engine) as session:
                    decisions = session.exec(select(Decision)).all()
                    runs = {r.decision_id: r for r in session.exec(select(ActionRun))}
                return len(decisions) == 18 and all(d.id in runs and runs[d.id].state == "succeeded"
                                                    for d in decisions)

            _wait("every requested action succeeded", 420, all_done, processes)
            for process in processes.values():
                process.send_signal(signal.SIGTERM)
            outputs = {name: process.communicate(timeout=120)[0] for name, process in processes.items()}
        finally:
            for process in processes.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    import psycopg

    with psycopg.connect(prefect_url.replace("+psycopg", "")) as conn:  # the ticks and actions ran through it
        tick_runs, action_runs = conn.execute(
            "SELECT count(*) FILTER (WHERE f.name = 'mape-tick'), count(*) FILTER (WHERE f.name = 'mape-action') "
            "FROM flow_run r JOIN flow f ON f.id = r.flow_id").fetchone()
    prefect_database.close()  # drops it
    print(f"takeover after SIGKILL: {takeover:.1f} s; Prefect on PostgreSQL: {tick_runs} tick and "
          f"{action_runs} action flow runs")
    assert tick_runs > 0 and action_runs >= 18
    assert takeover < 30, f"the dead controller's models were taken after {takeover:.1f} s"
    for name, process in processes.items():
        assert process.returncode == 0, outputs[name]
        assert "Traceback" not in outputs[name], outputs[name]
    with session_scope(engine) as session:
        runs = list(session.exec(select(ActionRun)))
        versions = Counter(v.created_by_action_run_id for v in session.exec(select(ModelVersion)))
        dispatched = {e.payload["decision"]: e.actor for e in session.exec(
            select(AuditEvent).where(AuditEvent.kind == "action.dispatched"))}
        assert leases.members(session, datetime.now(timezone.utc)) == []  # both survivors left
    assert len(runs) == 18 and len({r.decision_id for r in runs}) == 18  # one run per decision
    assert all(r.state == "succeeded" for r in runs)
    assert all(versions[r.id] == 1 for r in runs)  # one committed version per run
    applied = Counter(line.split()[1] for line in (tmp_path / "effects.log").read_text().splitlines()
                      if line.startswith("applied "))
    assert sorted(applied) == sorted(r.idempotency_key for r in runs) and set(applied.values()) == {1}
    late = [r for r in runs if r.decision_id > 12 and r.model_id in theirs]  # requested after the takeover
    assert late and all(dispatched[r.decision_id] != victim for r in late)
    assert _holders(engine) == {}  # and handed back their leases on SIGTERM
    engine.dispose()
