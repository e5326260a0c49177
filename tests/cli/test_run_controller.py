"""``mape run``: the long-running controller ticks on its interval under Prefect and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import pytest
import yaml
from sqlmodel import select

from knowledge.database import create_engine_for, session_scope
from knowledge.tables import Tick

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _finished_ticks(url: str) -> list[Tick]:
    engine = create_engine_for(url)
    try:
        with session_scope(engine) as session:
            return list(session.exec(select(Tick).where(Tick.status == "succeeded")))
    except Exception:  # noqa: BLE001 - the controller has not created the knowledge base yet
        return []
    finally:
        engine.dispose()


def test_mape_run_ticks_on_its_interval_and_stops_cleanly_on_sigterm(tmp_path: Path):
    port = _free_port()
    config = tmp_path / "mape.yaml"
    config.write_text(yaml.safe_dump({
        "db_url": "sqlite:///mape.db", "policies_dir": str(REPO / "policies"), "tick_interval": "5s",
        "controller_id": "test-controller", "prefect": {"home": "prefect", "server_port": port},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    mape = str(Path(sys.executable).parent / "mape")
    process = subprocess.Popen([mape, "run", "--config", str(config)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"sqlite:///{tmp_path / 'mape.db'}"
    try:
        deadline = time.monotonic() + 240
        while len(_finished_ticks(url)) < 2:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the controller did not finish two ticks in 240 s"
            time.sleep(2)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "mape controller stopped" in output
    assert "Traceback" not in output
    ticks = _finished_ticks(url)
    assert all(t.controller_id == "test-controller" and t.flow_run_id for t in ticks)
    # scheduled ticks are keyed by their scheduled times, one interval apart
    times = sorted(t.at for t in ticks)
    assert all((b - a).total_seconds() % 5 == 0 for a, b in zip(times, times[1:]))
    # the local Prefect server went down with the controller
    with pytest.raises((URLError, OSError)):
        urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
