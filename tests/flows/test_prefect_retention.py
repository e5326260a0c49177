"""The local Prefect server ``mape run`` starts deletes old finished flow runs (Prefect's db_vacuum service)."""

from __future__ import annotations

import socket
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from flows.prefect_retention import vacuum_environment
from flows.serve import local_prefect_server
from mape.config import RetentionConfig

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_local_server_deletes_finished_flow_runs_past_the_retention_and_keeps_the_rest(tmp_path: Path,
                                                                                          monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed, Running

    @flow(name="retention-probe")
    def probe() -> None:
        pass

    environment = {**vacuum_environment(RetentionConfig(prefect_flow_runs_for=timedelta(hours=2))),
                   "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": "2"}  # hourly in production
    for name in environment:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "prefect"
    with local_prefect_server(port=_free_port(), home=home, environment=environment) as api_url:
        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            runs = [client.create_flow_run(probe, tags=["mape-kb:test"]) for _ in range(4)]
            for run in runs[:3]:
                client.set_flow_run_state(run.id, Running(), force=True)
                client.set_flow_run_state(run.id, Completed(), force=True)
            # two finished runs ended three hours ago: past the retention; one just now; one never finished
            with sqlite3.connect(home / "prefect.db", timeout=30) as db:
                (ended,) = db.execute("SELECT end_time FROM flow_run WHERE id = ?", (str(runs[0].id),)).fetchone()
                assert ended is not None
                db.executemany("UPDATE flow_run SET end_time = datetime(end_time, '-3 hours') WHERE id = ?",
                               [(str(run.id),) for run in runs[:2]])
            deadline = time.monotonic() + 90
            left = {r.id for r in runs}
            while time.monotonic() < deadline and len(left) > 2:
                time.sleep(1)
                left = {r.id for r in client.read_flow_runs(limit=100, sort=FlowRunSort.ID_DESC)}
    assert left == {runs[2].id, runs[3].id}
