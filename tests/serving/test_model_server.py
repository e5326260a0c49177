"""A real model server answers /health, /predict and /metrics, refuses bad requests with 400, stops on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mape.serving.model_server import Metrics

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(artifact_uri: str) -> Iterator[str]:
    """One server of ``credit`` v7; on teardown SIGTERM must stop it with status 0."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mape.serving.model_server", "--artifact", artifact_uri, "--port", str(port),
         "--model", "credit", "--version", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line == f"serving credit v7 on http://127.0.0.1:{port}\n", process.stderr and process.stderr.read()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()
        stderr = process.stderr.read() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert status == 0, stderr
    assert "stopped" in stderr


def counters(base: str) -> dict[str, float]:
    status, body = call(f"{base}/metrics")
    assert status == 200
    text = body.decode()
    found = {f"requests {code}": float(value) for code, value in
             re.findall(r'^mape_model_server_requests_total\{code="(\d+)"\} (\S+)$', text, re.M)}
    found.update({f"latency {path}": float(value) for path, value in
                  re.findall(r'^mape_model_server_request_duration_seconds_count\{path="([^"]+)"\} (\S+)$', text,
                             re.M)})
    return found


def test_health_names_model_version_and_pid(server: str) -> None:
    status, body = call(f"{server}/health")

    answer = json.loads(body)
    assert status == 200
    assert answer["status"] == "ok" and answer["model"] == "credit" and answer["version"] == 7
    assert isinstance(answer["pid"], int)


def test_predictions_match_the_estimator_in_process(server: str, frame: pd.DataFrame,
                                                     estimator: LogisticRegression) -> None:
    rows = frame[["debt", "income"]].head(20)  # column order of the rows does not matter
    status, body = call(f"{server}/predict", json.dumps({"rows": rows.to_dict(orient="records")}).encode())

    assert status == 200
    assert json.loads(body) == {"predictions": estimator.predict(frame[["income", "debt"]].head(20)).tolist(),
                                "version": 7}


@pytest.mark.parametrize(("body", "message"), [
    (b'{"rows": [', "the body is not valid JSON"),
    (b'[1, 2]', 'a JSON object with a "rows" list'),
    (b'{"rows": [{"income": 1.0}]}', "rows lack the feature(s) debt"),
    (b'{"rows": [{"income": "lots", "debt": 1.0}]}', "prediction failed: ValueError"),
])
def test_a_bad_request_answers_400_saying_what_was_wrong(server: str, body: bytes, message: str) -> None:
    status, answer = call(f"{server}/predict", body)

    assert status == 400
    assert message in json.loads(answer)["error"]
    assert call(f"{server}/health")[0] == 200  # and the server keeps serving


def test_metrics_count_requests_by_code_and_time_them(server: str, frame: pd.DataFrame) -> None:
    before = counters(server)
    rows = json.dumps({"rows": frame[["income", "debt"]].head(2).to_dict(orient="records")}).encode()

    call(f"{server}/predict", rows)
    call(f"{server}/predict", rows)
    call(f"{server}/predict", b"not json")
    after = counters(server)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("requests 200") == 3  # two predictions and the first /metrics scrape (counted before it answers)
    assert delta("requests 400") == 1
    assert delta("latency /predict") == 3


def test_metrics_text_is_the_same_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # makes the import fail
    metrics = Metrics(model="credit", version=7)
    metrics.observe("/predict", 200, 0.003)
    metrics.observe("/predict", 400, 0.2)

    text = metrics.exposition().decode()

    assert 'mape_model_server_requests_total{code="200"} 1.0' in text
    assert 'mape_model_server_requests_total{code="400"} 1.0' in text
    assert 'mape_model_server_request_duration_seconds_bucket{le="0.005",path="/predict"} 1.0' in text
    assert 'mape_model_server_request_duration_seconds_count{path="/predict"} 2.0' in text
    assert 'mape_model_server_info{model="credit",version="7"} 1.0' in text
