"""``mape run``: serve the tick flow on an interval with Prefect, until SIGTERM.

Prefect's runner polls for scheduled runs of the ``mape-tick`` deployment and
executes each tick (in a subprocess, so one tick's crash cannot take the
controller down); on SIGTERM or SIGINT it stops taking new runs and the
process exits with status 0.

Interval schedules are turned into flow runs by the Prefect server's scheduler
service, which Prefect's ephemeral in-process server does not run. So when no
Prefect API is configured, :func:`local_prefect_server` starts a real Prefect
server on loopback (its SQLite database under ``prefect.home``), which also
gives the Prefect UI, and stops it with the controller. With ``prefect.api_url``
set (scale-out), the configured server is used as it is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

log = logging.getLogger(__name__)


def _healthy(api_url: str) -> bool:
    try:
        with urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310 - loopback URL we built
            return response.status == 200
    except (URLError, OSError):
        return False


@contextmanager
def local_prefect_server(*, port: int, home: Path | None, startup_timeout: float = 120.0,
                         environment: Mapping[str, str] | None = None) -> Iterator[str]:
    """Run ``prefect server start`` on 127.0.0.1:``port`` for the duration of the block; yields its API URL.

    ``environment``: server settings (e.g. :func:`flows.prefect_retention.vacuum_environment`); a variable
    already set in this process's environment wins.
    """
    api_url = f"http://127.0.0.1:{port}/api"
    if _healthy(api_url):
        log.info("A Prefect server already answers at %s; using it", api_url)
        yield api_url
        return
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false")}
    env.pop("PREFECT_API_URL", None)
    # The scheduler turns the interval schedule into flow runs; its default 60 s loop would delay the
    # first tick by a minute, and a local server can afford a shorter one.
    env.setdefault("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "10")
    for name, value in (environment or {}).items():
        env.setdefault(name, value)
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    log_file = open((home or Path.cwd()) / "prefect-server.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(api_url):
            if process.poll() is not None:
                raise RuntimeError(f"the local Prefect server exited with status {process.returncode}; "
                                   f"see {log_file.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local Prefect server did not answer at {api_url} within {startup_timeout:.0f}s")
            time.sleep(0.5)
        log.info("Local Prefect server is up at %s (UI at http://127.0.0.1:%d)", api_url, port)
        yield api_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
        log.info("Local Prefect server stopped")


def tick_deployment(config_file: str | None, *, interval: timedelta, name: str = "mape-controller") -> Any:
    """The tick flow's deployment that :func:`serve` serves: a run every ``interval``, tagged from its creation.

    Prefect gives each flow run a deployment creates the deployment's tags:
    here the knowledge base's (so reconciliation reads the run as its own)
    and the serving process's (:func:`flows.prefect_runs.supervisor_tag`: if
    this process dies with a tick that had not yet named its own process,
    the next controller can tell the tick was abandoned). Without a readable
    knowledge base the deployment has no tags; its ticks still name themselves
    once they run.
    """
    from flows.tick import tick_flow

    return tick_flow.to_deployment(
        name=name, interval=interval, parameters={"config_file": config_file}, tags=served_tags(config_file),
        description="The mape controller: one tick of the MAPE-K loop per interval.",
    )


def served_tags(config_file: str | None) -> list[str]:
    """The knowledge base's tag and this (serving) process's, or none when the knowledge base cannot be read."""
    from flows.prefect_runs import knowledge_base_tag, supervisor_tag
    from knowledge import queries
    from knowledge.database import create_engine_for, session_scope
    from knowledge.migrate import upgrade
    from mape.config import load_settings
    from mape.execute.claims import this_process

    try:
        settings = load_settings(config_file)
        upgrade(settings.db_url)  # as the first tick's controller would: the identity is written by a migration
        engine = create_engine_for(settings.db_url)
        try:
            with session_scope(engine) as session:
                instance = queries.knowledge_base_id(session)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the ticks report the failure themselves
        log.warning("The tick deployment has no tags: the knowledge base cannot be read: %s: %s",
                    type(exc).__name__, exc)
        return []
    return [knowledge_base_tag(instance), supervisor_tag(str(this_process()))]


def serve(config_file: str | None, *, interval: timedelta, name: str = "mape-controller",
          stop: threading.Event | None = None, stop_timeout: float = 60.0) -> None:
    """Serve the tick flow every ``interval`` against the Prefect API in ``PREFECT_API_URL`` until stopped.

    Prefect's runner runs in a worker thread, where it installs no signal
    handler of its own (its handler calls ``sys.exit`` from inside the event
    loop); this thread owns SIGTERM and SIGINT, and on either asks the runner
    to stop polling, lets it cancel what is in flight, and waits for it.
    At most one tick runs at a time (``limit=1``): a tick that overruns its
    interval delays the next one instead of racing it.
    """
    from prefect.runner import Runner

    # Prefect polls for due runs every 10 s by default, so a tick would start up to 10 s late.
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "5")
    stop = stop or threading.Event()
    deployment = tick_deployment(config_file, interval=interval, name=name)
    runner = Runner(name=name, pause_on_shutdown=False, limit=1)
    state: dict[str, object] = {}
    started = threading.Event()

    async def run() -> None:
        state["loop"] = asyncio.get_running_loop()
        await runner.aadd_deployment(deployment)
        started.set()
        await runner.start()

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            state["error"] = exc
        finally:
            started.set()
            stop.set()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("Received %s; stopping the controller after the tick in flight", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    worker = threading.Thread(target=target, name="prefect-runner", daemon=True)
    worker.start()
    try:
        started.wait()
        stop.wait()
        loop = state.get("loop")
        if worker.is_alive() and isinstance(loop, asyncio.AbstractEventLoop) and runner.started:
            asyncio.run_coroutine_threadsafe(runner.astop(), loop).result(timeout=stop_timeout)
        worker.join(timeout=stop_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    error = state.get("error")
    if error is not None and not isinstance(error, (asyncio.CancelledError, SystemExit)):
        raise RuntimeError(f"the Prefect runner stopped with an error: {error}") from error
