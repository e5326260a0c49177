"""Replicas of one model as model-server processes on this machine, started and stopped by the engine.

Who calls it: the ``rescale`` effector (through the
:class:`mape.serving.target.ServingTarget` interface), ``mape``
commands that show or stop serving, and tests. Each replica is a
``python -m mape.serving.model_server`` process in a session of its
own, so it outlives the controller tick that started it; what runs is
recorded in ``state_dir/<model>.json`` (pid, port, version, start time per
replica), which every later tick — in a fresh process — reads back. A second
*track* of the same model, such as the replicas of a canary
(:mod:`mape.execute.canary`), keeps its files in a directory of its own,
``state_dir/<track>/<model>.json`` and so on, so the two sets are scaled apart. The file
is replaced atomically, under an exclusive ``flock`` on
``state_dir/<model>.lock`` held for the whole of a read-change-write, so two
controllers never corrupt it or start the same replica twice; a ``scale`` that
starts replicas holds the lock while they start (up to ``startup_timeout``).

Each replica writes its output to ``state_dir/<model>.<port>.log``; a replica
that fails to start is killed and its last lines end the
:class:`mape.errors.ServingError` raised. New replicas serve the version the
``artifact`` callable names when they start, so after a promotion or a
rollback new replicas serve the new version while older ones keep theirs
until they are replaced; :meth:`LocalReplicaSet.roll` replaces them.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mape._util.timeutil import Clock, utcnow
from mape.errors import InvalidParameterError, ServingError
from mape.serving.model_server import EXIT_PORT_IN_USE
from mape.serving.target import ServingHealth, served_artifact

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRACK_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_SOURCE_ROOT = Path(__file__).resolve().parents[3]  # the directory holding the ``mape`` package
_PORT_RETRIES = 3  # a replica that finds its port taken (another process won the race) tries another
_LOG_TAIL_LINES = 20
# Popen objects of the replicas this process started: kept so they are reaped (no zombies) and never
# garbage-collected while running; replicas started by other processes are watched by pid alone.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
# urllib would send requests for 127.0.0.1 to an http_proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ReplicaRecord(BaseModel):
    """One replica as ``state_dir/<model>.json`` records it.

    Attributes
    ----------
    pid, port : int
        The process and the port it listens on.
    version : int
        The model version it serves.
    artifact_uri : str
        The artifact it loaded.
    started_at : datetime
        When it was started (the replica set's clock).
    proc_start : int or None
        The process's start time in clock ticks since boot (``/proc/<pid>/stat``),
        so that a pid reused by another process is not taken for the replica.
    log : str
        Its log file; ``log_offset`` is where its own lines begin.
    """

    model_config = ConfigDict(extra="ignore")

    pid: int
    port: int
    version: int
    artifact_uri: str
    started_at: datetime
    proc_start: int | None = None
    log: str
    log_offset: int = 0

    def __str__(self) -> str:
        return f"replica v{self.version} on port {self.port} (pid {self.pid})"


class ReplicaSetState(BaseModel):
    """Everything ``state_dir/<model>.json`` holds: the replicas, the count asked for, the last scale-up."""

    model_config = ConfigDict(extra="ignore")

    model: str
    desired: int = Field(0, ge=0)
    last_scale_up_at: datetime | None = None
    replicas: list[ReplicaRecord] = Field(default_factory=list)


@dataclass
class _Starting:
    record: ReplicaRecord
    popen: subprocess.Popen[bytes]
    deadline: float
    attempts: int


class LocalReplicaSet:
    """N model-server processes of one model on 127.0.0.1; a :class:`ServingTarget`.

    Parameters
    ----------
    model : str
        The managed model's name (letters, digits, ``.``, ``_``, ``-``); names the state and log files.
    state_dir : Path
        Where the state file, its lock and the replicas' logs live; created when missing.
    artifact : callable
        Returns ``(version, artifact_uri)`` of the version new replicas should
        serve, normally the production version; called once per scale-up.
    port_range : (int, int)
        Inclusive range of ports to choose free ones from.
    startup_timeout : float
        Seconds a new replica has to answer ``/health`` before it is killed.
    stop_grace : float
        Seconds between SIGTERM and SIGKILL when stopping a replica.
    health_timeout : float
        Seconds each replica has to answer ``/health`` in :meth:`health`.
    clock : callable
        Returns the current time (aware UTC); recorded as each replica's start time.
    track : str, optional
        A second set of replicas of the same model (``"canary"``), with its
        files in ``state_dir/<track>/``; None: the model's main set.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as state_dir:
    ...     replicas = LocalReplicaSet("credit", Path(state_dir), lambda: (3, "file:///models/credit/run-7"))
    ...     print(replicas, replicas.replicas(), replicas.health(), sep="; ")
    local replicas of credit; 0; 0 of 0 replicas ready
    """

    def __init__(
        self,
        model: str,
        state_dir: Path,
        artifact: Callable[[], tuple[int, str]],
        *,
        port_range: tuple[int, int] = (18500, 18999),
        startup_timeout: float = 30.0,
        stop_grace: float = 5.0,
        health_timeout: float = 1.0,
        host: str = "127.0.0.1",
        clock: Clock = utcnow,
        track: str | None = None,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(model, str) or not _MODEL_NAME.match(model):
            raise InvalidParameterError.for_parameter(
                "model", owner, "a name of letters, digits, '.', '_' and '-'", model)
        if track is not None and (not isinstance(track, str) or not _TRACK_NAME.match(track)):
            raise InvalidParameterError.for_parameter(
                "track", owner, "None or a lowercase name of letters, digits and '-'", track)
        low, high = port_range
        if not (1 <= low <= high <= 65535):
            raise InvalidParameterError.for_parameter(
                "port_range", owner, "a (low, high) pair with 1 <= low <= high <= 65535", port_range)
        for name, value in (("startup_timeout", startup_timeout), ("stop_grace", stop_grace),
                            ("health_timeout", health_timeout)):
            if not value > 0:
                raise InvalidParameterError.for_parameter(name, owner, "a number of seconds > 0", value)
        self.model = model
        self.track = track
        self.state_dir = Path(state_dir) if track is None else Path(state_dir) / track
        self.artifact = artifact
        self.port_range = (low, high)
        self.startup_timeout = float(startup_timeout)
        self.stop_grace = float(stop_grace)
        self.health_timeout = float(health_timeout)
        self.host = host
        self.clock = clock

    def __str__(self) -> str:
        return f"local {self.track + ' ' if self.track else ''}replicas of {self.model}"

    def __repr__(self) -> str:
        if self.track is None:
            return f"LocalReplicaSet({self.model!r}, {str(self.state_dir)!r})"
        return f"LocalReplicaSet({self.model!r}, {str(self.state_dir.parent)!r}, track={self.track!r})"

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"{self.model}.json"

    # ------------------------------------------------------------------ ServingTarget

    def replicas(self) -> int:
        """How many replicas run now; replicas whose process has ended are forgotten."""
        with self._locked():
            return len(self._live_state().replicas)

    def members(self) -> list[ReplicaRecord]:
        """The running replicas, oldest first."""
        with self._locked():
            return list(self._live_state().replicas)

    def last_scale_up_at(self) -> datetime | None:
        """When replicas were last added (for :func:`~mape.serving.target.plan_replicas`)."""
        with self._locked():
            return self._load().last_scale_up_at

    def scale(self, n: int) -> int:
        """Start or stop replicas until ``n`` run; return how many run afterwards.

        New replicas start together and count once they answer ``/health``;
        replicas are stopped newest first. Calling it again with the same
        ``n`` changes nothing.

        Raises
        ------
        InvalidParameterError
            When ``n`` is not an int >= 0.
        ServingError
            When no free port is left, a replica cannot be started or does not
            answer ``/health`` within ``startup_timeout`` (for instance because
            the artifact cannot be loaded), or the artifact callable fails. The
            replicas that did start are kept and recorded.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidParameterError.for_parameter("n", f"{type(self).__name__}.scale", "an int >= 0", n)
        with self._locked():
            state = self._live_state()
            current = len(state.replicas)
            if state.desired != n:
                state.desired = n
                self._save(state)
            if n == current:
                return current
            if n < current:
                ordered = self._oldest_first(state.replicas)
                kept, victims = ordered[:n], ordered[n:]
                self._stop(victims)
                state.replicas = kept
                self._save(state)
                log.info("%s scaled down from %d to %d replicas; stopped %s",
                         self, current, n, ", ".join(str(r) for r in victims))
                return n
            started, failure = self._start(n - current, taken={r.port for r in state.replicas})
            if started:
                state.replicas = [*state.replicas, *started]
                state.last_scale_up_at = self.clock()
                self._save(state)
                log.info("%s scaled up from %d to %d replicas; started %s",
                         self, current, len(state.replicas), ", ".join(str(r) for r in started))
            if failure is not None:
                raise failure
            return len(state.replicas)

    def roll(self) -> int:
        """Replace every replica that serves another version than the one ``artifact`` names now.

        The new replicas start (and answer ``/health``) before the old ones
        stop, so the set never serves fewer replicas than it had; the count
        stays what it was. Returns how many were replaced; calling it again
        replaces nothing.

        Raises
        ------
        ServingError
            When ``artifact`` fails, or a new replica cannot be started: the
            old replicas then keep serving, and new ones that did start are
            stopped again.
        """
        with self._locked():
            state = self._live_state()
            version, _ = served_artifact(self.artifact, model=self.model)
            stale = [r for r in state.replicas if r.version != version]
            if not stale:
                return 0
            started, failure = self._start(len(stale), taken={r.port for r in state.replicas})
            if failure is not None:
                self._stop(started)
                raise failure
            self._stop(stale)
            state.replicas = [*(r for r in state.replicas if r not in stale), *started]
            self._save(state)
            log.info("%s rolled to version %s: replaced %s", self, version, ", ".join(str(r) for r in stale))
            return len(stale)

    def health(self) -> ServingHealth:
        """Ask each running replica's ``/health``; a replica is ready when it answers with its own pid."""
        with self._locked():
            state = self._live_state()
        ready: list[ReplicaRecord] = []
        problems: list[str] = []
        for record in state.replicas:
            answer, problem = _get_health(self.host, record.port, self.health_timeout)
            if answer is not None and answer.get("status") == "ok" and answer.get("pid") == record.pid:
                ready.append(record)
            else:
                problems.append(f"{record} {problem or 'answers for another process'}")
        parts = [f"{len(ready)} of {state.desired} replicas ready"]
        if ready:
            versions = sorted({r.version for r in ready})
            parts.append("serving " + ", ".join(
                f"v{v}" + (f" ({sum(r.version == v for r in ready)})" if len(versions) > 1 else "")
                for v in versions))
        if len(state.replicas) != state.desired:
            parts.append(f"{len(state.replicas)} running")
        detail = "; ".join([", ".join(parts), *problems])
        return ServingHealth(replicas=state.desired, ready=len(ready),
                             endpoints=[f"http://{self.host}:{r.port}" for r in ready], detail=detail)

    def stop_all(self) -> int:
        """Stop every replica and ask for none; return how many were stopped."""
        with self._locked():
            state = self._live_state()
            victims = state.replicas
            self._stop(victims)
            state.replicas, state.desired = [], 0
            self._save(state)
        if victims:
            log.info("%s stopped all %d replicas", self, len(victims))
        return len(victims)

    # ------------------------------------------------------------------ state

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / f"{self.model}.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _load(self) -> ReplicaSetState:
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return ReplicaSetState(model=self.model)
        try:
            return ReplicaSetState.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ServingError(f"the state file {self.state_file} is unreadable: {exc}", model=self.model) from None

    def _save(self, state: ReplicaSetState) -> None:
        fd, temp = tempfile.mkstemp(dir=self.state_dir, prefix=f".{self.model}.", suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(state.model_dump_json(indent=2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.state_file)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _live_state(self) -> ReplicaSetState:
        """The state with replicas whose process ended dropped (and the file rewritten if any were)."""
        state = self._load()
        live = [r for r in state.replicas if _alive(r.pid, r.proc_start)]
        if len(live) != len(state.replicas):
            for gone in (r for r in state.replicas if r not in live):
                log.warning("%s of %s has ended; it is forgotten", str(gone).capitalize(), self.model)
            state.replicas = live
            self._save(state)
        return state

    @staticmethod
    def _oldest_first(records: list[ReplicaRecord]) -> list[ReplicaRecord]:
        return sorted(records, key=lambda r: r.started_at)  # stable: equal times keep their start order

    # ------------------------------------------------------------------ processes

    def _start(self, k: int, *, taken: set[int]) -> tuple[list[ReplicaRecord], ServingError | None]:
        """Start ``k`` replicas together; return those that answered ``/health`` and the first failure."""
        try:
            version, uri = served_artifact(self.artifact, model=self.model)
        except ServingError as exc:
            return [], exc
        tried = set(taken)
        pending: list[_Starting] = []
        failures: list[ServingError] = []
        try:
            for port in self._free_ports(k, tried):
                tried.add(port)
                pending.append(self._spawn(port, int(version), str(uri), attempts=1))
        except ServingError as exc:
            failures.append(exc)
        ready: list[ReplicaRecord] = []
        still: list[_Starting] = []
        try:
            while pending:
                still = []
                for start in pending:
                    record, popen = start.record, start.popen
                    code = popen.poll()
                    if code is None:
                        answer, _ = _get_health(self.host, record.port, 0.5)
                        if answer is not None and answer.get("pid") == record.pid:
                            ready.append(record)
                        elif time.monotonic() > start.deadline:
                            _kill(popen)
                            failures.append(ServingError(
                                f"{record} did not answer /health within {self.startup_timeout:g}s and was killed",
                                model=self.model, log_tail=_tail(record)))
                        else:
                            still.append(start)
                        continue
                    _CHILDREN.pop(record.pid, None)
                    if code == EXIT_PORT_IN_USE and start.attempts < _PORT_RETRIES:
                        try:
                            port = self._free_ports(1, tried)[0]
                            tried.add(port)
                            still.append(self._spawn(port, record.version, record.artifact_uri,
                                                     attempts=start.attempts + 1))
                        except ServingError as exc:
                            failures.append(exc)
                        continue
                    failures.append(ServingError(
                        f"{record} exited with status {code} before answering /health",
                        model=self.model, log_tail=_tail(record)))
                pending = still
                if pending:
                    time.sleep(0.1)
        except BaseException:  # interrupted: no replica may be left running unrecorded
            for start in [*pending, *still]:
                _kill(start.popen)
            for record in ready:
                _signal(record, signal.SIGKILL)
            raise
        if not failures:
            return ready, None
        first = failures[0]
        if len(failures) > 1:
            first = ServingError(f"{len(failures)} of {k} new replicas failed; the first: {first.message}",
                                 model=self.model, log_tail=first.log_tail)
        return ready, first

    def _spawn(self, port: int, version: int, uri: str, *, attempts: int) -> _Starting:
        log_path = self.state_dir / f"{self.model}.{port}.log"
        command = [sys.executable, "-m", "mape.serving.model_server", "--artifact", uri,
                   "--port", str(port), "--model", self.model, "--version", str(version), "--host", self.host]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE_ROOT), env.get("PYTHONPATH")) if p)
        started_at = self.clock()
        with open(log_path, "ab") as handle:
            offset = handle.tell()
            handle.write(f"--- {started_at.isoformat()} starting {self.model} v{version} on port {port}\n".encode())
            handle.flush()
            try:
                popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                         start_new_session=True, close_fds=True, env=env)
            except OSError as exc:
                raise ServingError(f"cannot start a replica on port {port}: {exc}", model=self.model) from None
        _CHILDREN[popen.pid] = popen
        record = ReplicaRecord(pid=popen.pid, port=port, version=version, artifact_uri=uri, started_at=started_at,
                               proc_start=_proc_stat(popen.pid)[1], log=str(log_path), log_offset=offset)
        return _Starting(record, popen, time.monotonic() + self.startup_timeout, attempts)

    def _free_ports(self, k: int, taken: set[int]) -> list[int]:
        low, high = self.port_range
        found: list[int] = []
        for port in range(low, high + 1):
            if port not in taken and _can_bind(self.host, port):
                found.append(port)
                if len(found) == k:
                    return found
        raise ServingError(f"no free port for {k - len(found)} more replica(s) in {low}-{high}", model=self.model)

    def _stop(self, records: list[ReplicaRecord]) -> None:
        """SIGTERM each, wait ``stop_grace`` seconds, SIGKILL what still runs, and reap our own children."""
        running = [r for r in records if _signal(r, signal.SIGTERM)]
        deadline = time.monotonic() + self.stop_grace
        while running and time.monotonic() < deadline:
            time.sleep(0.05)
            running = [r for r in running if _alive(r.pid, r.proc_start)]
        for record in running:
            log.warning("%s of %s ignored SIGTERM for %gs; killing it", str(record).capitalize(), self.model,
                        self.stop_grace)
            _signal(record, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while running and time.monotonic() < deadline:
            time.sleep(0.05)
            running = [r for r in running if _alive(r.pid, r.proc_start)]


# ---------------------------------------------------------------------- helpers


def _proc_stat(pid: int) -> tuple[str | None, int | None]:
    """The process state letter and start time (clock ticks since boot) from ``/proc``; Nones without it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None, None


def _alive(pid: int, proc_start: int | None) -> bool:
    """Whether the replica's process still runs (not ended, not a zombie, not a reuse of its pid)."""
    popen = _CHILDREN.get(pid)
    if popen is not None:
        if popen.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid now belongs to another user's process
        return False
    state, started = _proc_stat(pid)
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return proc_start is None or started is None or started == proc_start


def _signal(record: ReplicaRecord, signum: int) -> bool:
    """Send ``signum`` to the replica if it still runs; whether it was sent."""
    if not _alive(record.pid, record.proc_start):
        return False
    try:
        os.kill(record.pid, signum)
    except ProcessLookupError:
        return False
    return True


def _kill(popen: subprocess.Popen[bytes]) -> None:
    popen.kill()
    popen.wait()
    _CHILDREN.pop(popen.pid, None)


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _get_health(host: str, port: int, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """The replica's ``/health`` document, or None and why not."""
    try:
        with _OPENER.open(f"http://{host}:{port}/health", timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return None, f"answers /health with HTTP {exc.code}"
    except http.client.HTTPException as exc:
        # Not an HTTP answer. Seen: while a replica is not listening yet, a connection to a loopback port in the
        # ephemeral range can connect to itself (TCP simultaneous open) and read back its own request line
        # (BadStatusLine: 'GET /health HTTP/1.1'); the replica is then asked again until its deadline.
        return None, f"does not answer /health with HTTP: {type(exc).__name__}: {exc}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"does not answer /health: {reason}"
    except ValueError as exc:
        return None, f"answers /health with something not JSON: {exc}"
    return (answer, None) if isinstance(answer, dict) else (None, "answers /health with something not an object")


def _tail(record: ReplicaRecord, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines the replica wrote to its log."""
    try:
        with open(record.log, "rb") as handle:
            handle.seek(record.log_offset)
            text = handle.read()[-64 * 1024:].decode(errors="replace")
    except OSError as exc:
        return f"(its log {record.log} cannot be read: {exc})"
    return "\n".join(text.splitlines()[-lines:])
