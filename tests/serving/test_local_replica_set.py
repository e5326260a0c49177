"""LocalReplicaSet runs real model-server processes that outlive the object, scales them idempotently, and cleans up."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mape.errors import ServingError
from mape.serving import LocalReplicaSet, ServingTarget
from mape.data.artifacts import ARTIFACT_FILE
from tests.conftest import SteppingClock
from tests.serving.conftest import store

PORTS = (38500, 38999)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

MakeSet = Callable[..., LocalReplicaSet]


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture
def make_set(tmp_path: Path) -> Iterator[MakeSet]:
    """Builds replica sets on ``tmp_path``; afterwards stops them all and checks that no replica is left."""
    made: list[LocalReplicaSet] = []
    pids: set[int] = set()

    def make(artifact: Callable[[], tuple[int, str]], **kwargs: object) -> LocalReplicaSet:
        replicas = LocalReplicaSet("credit", tmp_path / "serving", artifact, **{"port_range": PORTS, **kwargs})
        made.append(replicas)
        return replicas

    yield make
    for replicas in made:
        pids.update(r.pid for r in replicas.members())
        replicas.stop_all()
    assert not [pid for pid in pids if running(pid)]
    assert processes_naming(str(tmp_path)) == []


def predict(port: int, rows: list[dict[str, float]]) -> dict[str, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"rows": rows}).encode())
    with _OPENER.open(request, timeout=10) as response:
        return json.loads(response.read())


def test_replicas_scale_survive_a_restarted_controller_and_serve_the_production_version(
    make_set: MakeSet, artifact_uri: str, estimator: LogisticRegression, frame: pd.DataFrame, tmp_path: Path,
    clock: SteppingClock,
) -> None:
    production = {"version": (1, artifact_uri)}
    replicas = make_set(lambda: production["version"], clock=clock)
    assert isinstance(replicas, ServingTarget)
    rows = frame[["income", "debt"]].head(5)
    expected = estimator.predict(rows).tolist()

    # 0 -> 2: two live processes on two ports, both predicting
    assert replicas.scale(2) == 2
    members = replicas.members()
    assert len({r.pid for r in members}) == 2 and all(running(r.pid) for r in members)
    assert len({r.port for r in members}) == 2
    for member in members:
        assert predict(member.port, rows.to_dict(orient="records")) == {"predictions": expected, "version": 1}
    assert replicas.last_scale_up_at() == clock()

    # a controller restarted in a fresh object reads the same replicas back
    restarted = make_set(lambda: production["version"], clock=clock)
    assert restarted.replicas() == 2
    health = restarted.health()
    assert (health.replicas, health.ready) == (2, 2)
    assert sorted(health.endpoints) == sorted(f"http://127.0.0.1:{r.port}" for r in members)

    # 2 -> 1 stops the newest; 1 again changes nothing
    clock.advance(timedelta(minutes=1))
    assert restarted.scale(1) == 1
    assert restarted.members() == members[:1]
    assert not running(members[1].pid)
    state = (tmp_path / "serving" / "credit.json").read_text()
    assert restarted.scale(1) == 1
    assert (tmp_path / "serving" / "credit.json").read_text() == state

    # after a promotion, new replicas serve the new version; the old one keeps its own
    production["version"] = (2, store(estimator, tmp_path / "artifacts" / "run-2"))
    assert replicas.scale(2) == 2
    newest = replicas.members()[-1]
    assert predict(newest.port, rows.to_dict(orient="records"))["version"] == 2
    assert "serving v1 (1), v2 (1)" in replicas.health().detail

    # a replica killed behind our back is forgotten, and health shows the gap
    os.kill(newest.pid, signal.SIGKILL)
    os.waitpid(newest.pid, 0)  # this process started it, so it reaps it like init would
    assert replicas.replicas() == 1
    health = replicas.health()
    assert (health.replicas, health.ready) == (2, 1)


def test_an_unreadable_artifact_fails_the_scale_naming_the_model_and_showing_the_log(
    make_set: MakeSet, tmp_path: Path,
) -> None:
    broken = tmp_path / "artifacts" / "broken"
    broken.mkdir(parents=True)
    (broken / ARTIFACT_FILE).write_bytes(b"this is not a joblib file")
    replicas = make_set(lambda: (3, broken.as_uri()))

    with pytest.raises(ServingError) as failure:
        replicas.scale(1)

    message = str(failure.value)
    assert message.startswith("serving model credit: replica v3 on port")
    assert "exited with status 2 before answering /health" in message
    assert f"Model server of credit v3 cannot load artifact {broken.as_uri()}" in failure.value.log_tail
    assert failure.value.log_tail in message
    assert str(pickle.loads(pickle.dumps(failure.value))) == message  # it can cross to a flow worker
    assert replicas.replicas() == 0
    assert replicas.health().replicas == 1  # still asked for: a later scale(1) tries again


def test_no_free_port_is_a_serving_error(make_set: MakeSet, artifact_uri: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        replicas = make_set(lambda: (1, artifact_uri), port_range=(port, port))

        expected = rf"^serving model credit: no free port for 1 more replica\(s\) in {port}-{port}$"
        with pytest.raises(ServingError, match=expected):
            replicas.scale(1)


def test_a_failing_version_lookup_is_a_serving_error(make_set: MakeSet) -> None:
    def no_production() -> tuple[int, str]:
        raise LookupError("model credit has no production version")

    with pytest.raises(ServingError, match="cannot tell which version to serve: LookupError: model credit has no"):
        make_set(no_production).scale(1)


def test_a_replica_outlives_the_controller_process_that_started_it_and_controllers_share_the_set(
    make_set: MakeSet, artifact_uri: str, tmp_path: Path,
) -> None:
    tick = (f"from pathlib import Path\n"
            f"from mape.serving.local import LocalReplicaSet\n"
            f"replicas = LocalReplicaSet('credit', Path({str(tmp_path / 'serving')!r}), lambda: (1, {artifact_uri!r}),"
            f" port_range={PORTS!r})\n"
            f"print(replicas.scale(1))\n")
    other = subprocess.run([sys.executable, "-c", tick], capture_output=True, text=True, timeout=60)
    assert (other.returncode, other.stdout) == (0, "1\n"), other.stderr

    first, second = make_set(lambda: (1, artifact_uri)), make_set(lambda: (1, artifact_uri))
    [started] = first.members()
    assert running(started.pid)
    assert predict(started.port, [{"income": 50.0, "debt": 10.0}])["version"] == 1

    with ThreadPoolExecutor(max_workers=2) as pool:  # two controllers at once: the lock lets one act
        counts = list(pool.map(lambda replicas: replicas.scale(2), [first, second]))

    assert counts == [2, 2]
    assert len(first.members()) == 2 and first.members() == second.members()
    assert first.members()[0] == started


def test_a_health_check_that_reads_back_its_own_request_is_not_an_answer_and_is_asked_again():
    """A connection to a loopback port nobody listens on yet can connect to itself (TCP simultaneous open) and read
    its own request line back; that is "not answering yet", not a crash of the whole start."""
    import threading

    from mape.serving.local import _get_health

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def echo() -> None:  # what a self-connected socket does: the request comes back as the "answer"
            connection, _ = server.accept()
            with connection:
                connection.sendall(connection.recv(65536))

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        answer, why = _get_health("127.0.0.1", port, 5.0)
        thread.join(5)
    assert answer is None
    assert why is not None and why.startswith("does not answer /health with HTTP: BadStatusLine")
