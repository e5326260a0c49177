"""A controller for the crash test to kill: imports everything once, then forks one controller process per life.

Run as ``python -m tests.e2e.crash_driver CONFIG LOGDIR`` (by
``tests/e2e/test_crash_recovery.py``), with ``PREFECT_API_URL`` set. Importing
mape, Prefect and torch takes about 5 s here, so 50 restarts of a fresh
interpreter would take minutes of imports alone; this zygote pays that once
and forks (before any thread, connection or controller exists). Each child is
a real controller process: it builds its controller from the configuration
(migrations, entry-point actions, its own knowledge-base engine and Prefect
client) and runs ``tick_flow`` against the Prefect server until it is killed.

Commands on stdin, one per line; each answer is one line on stdout:

- ``fork``: start a controller that ticks for ever; answers its pid.
- ``quiet``: start one that ticks until no decision waits and no run is in
  flight, then exits; answers ``quiet <exit status>`` when it has (2: not
  quiet within :data:`QUIET_WITHIN` seconds).
- ``exit``: leave.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path


#: A ``quiet`` controller that has not settled everything within this many seconds gives up (exit status 2).
QUIET_WITHIN = 240


def _reap() -> None:
    """Collect the killed children (until then they are zombies)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _quiet(config: str) -> bool:
    from sqlmodel import func, select

    from flows.controllers import controller_for
    from knowledge import queries
    from knowledge.database import session_scope
    from knowledge.tables import ActionRun, Decision

    with session_scope(controller_for(config).engine) as session:
        in_flight = queries.in_flight_actions(session)
        waiting = session.exec(select(func.count()).select_from(Decision).where(
            ~Decision.id.in_(select(ActionRun.decision_id)))).one()  # type: ignore[union-attr]
    return not in_flight and waiting == 0


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when the zygote dies, so a failed test leaves no controller behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # no prctl here (not Linux, or no glibc): the child is not tied to the zygote and must be killed


def _child(config: str, log: Path, *, quiet: bool) -> None:
    _die_with_parent()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    code = 0
    born = time.monotonic()
    try:
        from flows.controllers import controller_for
        from flows.tick import tick_flow

        controller_for(config)
        print(f"controller built in {time.monotonic() - born:.2f}s", flush=True)
        while True:
            begun = time.monotonic()
            report = tick_flow(config_file=config)
            print(f"tick {report['at']} in {time.monotonic() - begun:.2f}s "
                  f"actions={[(a['id'], a['state']) for a in report['actions']]} "
                  f"reconciled={report['reconciled']}", flush=True)
            if quiet and _quiet(config):
                break
            if quiet and time.monotonic() - born > QUIET_WITHIN:
                print(f"still not quiet after {QUIET_WITHIN}s", flush=True)
                code = 2
                break
    except BaseException:  # noqa: BLE001 - a child reports and exits; the zygote lives on
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        os._exit(code)


def main(config: str, logs: str) -> None:
    import flows.tick  # noqa: F401 - the slow imports, once, before any fork

    assert threading.active_count() == 1, f"threads before fork: {threading.enumerate()}"
    directory = Path(logs)
    lives = 0
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        _reap()
        if command in ("fork", "quiet"):
            lives += 1
            pid = os.fork()
            if pid == 0:
                _child(config, directory / f"life-{lives:03d}.log", quiet=command == "quiet")
            if command == "fork":
                print(pid, flush=True)
            else:
                _, status = os.waitpid(pid, 0)
                print(f"quiet {os.waitstatus_to_exitcode(status)}", flush=True)
        elif command == "exit":
            break


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
