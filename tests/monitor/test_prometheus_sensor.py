"""The Prometheus sensor against a real Prometheus server scraping a real model server and a small exporter.

The session fixture starts ``prometheus`` (Debian's 2.42: ``apt-get install
-y prometheus``; ``.ci/services`` installs it) on a free loopback port,
scraping every second: a :class:`mape.serving.model_server.ModelServer`
(labelled ``model=credit`` in the scrape configuration, as a deployment
would), an exporter of test gauges, and the controller's own
:class:`mape.exporter.ControllerMetrics`. Without the binary the tests that
need it are skipped locally and fail under ``CI=true``. The tests of an
unreachable server need no Prometheus.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Gauge

from mape._util.timeutil import utcnow
from mape.config import METRIC_ROOTS, PrometheusConfig
from mape.errors import InvalidParameterError
from mape.exporter import ControllerMetrics, MetricsServer
from mape.monitor.sensors.prometheus import PrometheusSensor, prometheus_observations
from mape.plan.fields import CONTEXT_FIELDS
from mape.serving.model_server import ModelServer

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: Requests answered /predict before Prometheus starts (so the series exist and rates have a start), and after.
_GOOD_BEFORE, _BAD_BEFORE, _GOOD_AFTER, _BAD_AFTER = 1, 1, 4, 2
_PREDICTS = _GOOD_BEFORE + _BAD_BEFORE + _GOOD_AFTER + _BAD_AFTER
_BAD = _BAD_BEFORE + _BAD_AFTER


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get_json(url: str, timeout: float = 5) -> Any:
    with _OPENER.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class _Doubler:
    """An estimator small enough to write inline: the model server only needs ``predict``."""

    def predict(self, frame: pd.DataFrame) -> Any:
        return frame["x"].to_numpy() * 2


@dataclass
class Stack:
    """A running Prometheus, what it scrapes, and its address."""

    url: str
    model_server: ModelServer
    controller: ControllerMetrics
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        return list(answer["data"]["result"])

    def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        seen: Any = None
        while time.monotonic() < deadline:
            result = self.query(promql)
            seen = [float(r["value"][1]) for r in result]
            if seen == [expected]:
                return
            time.sleep(0.2)
        raise AssertionError(f"{promql} stayed {seen}, never [{expected}]; Prometheus log:\n{self.log.read_text()}")


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        message = ("the prometheus binary is not on PATH; install it with `apt-get install -y prometheus` "
                   "(.ci/services does so when run as root)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"Prometheus is required under CI: {message}")
        pytest.skip(message)
    return binary


def _serve(server: Any) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return thread


def _gauges() -> CollectorRegistry:
    registry = CollectorRegistry()
    depth = Gauge("mape_test_queue_depth", "Requests waiting, by model.", ["model"], registry=registry)
    depth.labels(model="credit").set(7.5)
    depth.labels(model="other").set(2)
    load = Gauge("mape_test_replica_load", "Load of each replica.", ["replica"], registry=registry)
    load.labels(replica="a").set(0.25)
    load.labels(replica="b").set(0.75)
    Gauge("mape_test_nan", "Never measured.", registry=registry).set(math.nan)
    return registry


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = _prometheus_binary()
    directory = tmp_path_factory.mktemp("prometheus")

    model_server = ModelServer(("127.0.0.1", 0), estimator=_Doubler(), model="credit", version=1)
    model_thread = _serve(model_server)
    predict = f"{model_server.url}/predict"
    for _ in range(_GOOD_BEFORE):
        assert _post(predict, b'{"rows": [{"x": 1.5}]}') == 200
    for _ in range(_BAD_BEFORE):
        assert _post(predict, b"not json") == 400
    gauges = MetricsServer(_gauges(), "127.0.0.1", 0)
    controller = ControllerMetrics()
    for errors in ([], ["plan: KeyError: 'x'"]):
        controller.observe_tick(SimpleNamespace(errors=errors, decisions=[]), duration=0.2)
    controller_server = controller.serve("127.0.0.1", 0)

    host, port = model_server.server_address[:2]
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "model-server", "static_configs": [{"targets": [f"{host}:{port}"],
                                                             "labels": {"model": "credit"}}]},
            {"job_name": "gauges", "static_configs": [{"targets": [f"127.0.0.1:{gauges.port}"]}]},
            {"job_name": "controller", "static_configs": [{"targets": [f"127.0.0.1:{controller_server.port}"]}]},
        ],
    }))
    log = directory / "prometheus.log"
    prom_port = free_port()
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=directory)
    stack = Stack(url=f"http://127.0.0.1:{prom_port}", model_server=model_server, controller=controller, log=log)
    try:
        _wait_until_up(stack, process, jobs=3)
        stack.wait_for(f'sum(mape_model_server_request_duration_seconds_count{{path="/predict"}})',
                       _GOOD_BEFORE + _BAD_BEFORE)
        for _ in range(_GOOD_AFTER):
            assert _post(predict, b'{"rows": [{"x": 2.0}, {"x": 3.0}]}') == 200
        for _ in range(_BAD_AFTER):
            assert _post(predict, b'{"rows": [{"y": 1}]}') == 400
        stack.wait_for(f'sum(mape_model_server_request_duration_seconds_count{{path="/predict"}})', _PREDICTS)
        stack.wait_for("sum(mape_ticks_total)", 2)
        yield stack
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        controller_server.close()
        gauges.close()
        model_server.shutdown()
        model_server.server_close()
        model_thread.join(timeout=5)


def _wait_until_up(stack: Stack, process: subprocess.Popen[bytes], *, jobs: int, timeout: float = 60.0) -> None:
    """Until Prometheus answers and every target has been scraped successfully (``/api/v1/targets``)."""
    deadline = time.monotonic() + timeout
    problem = "Prometheus did not answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited with {process.returncode}:\n{stack.log.read_text()}")
        try:
            targets = _get_json(f"{stack.url}/api/v1/targets")["data"]["activeTargets"]
        except (OSError, ValueError, KeyError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            health = {t["labels"]["job"]: (t["health"], t.get("lastError", "")) for t in targets}
            if len(health) == jobs and all(h == "up" for h, _ in health.values()):
                return
            problem = f"targets: {health}"
        time.sleep(0.2)
    raise AssertionError(f"Prometheus targets not up after {timeout:g}s ({problem}):\n{stack.log.read_text()}")


def _sensor(stack: Stack, **queries: str) -> PrometheusSensor:
    return PrometheusSensor(stack.url, {name.replace("__", "."): q for name, q in queries.items()}, timeout=5.0)


# ---------------------------------------------------------------------- values against a real server


def test_values_match_what_the_exporters_export(stack: Stack) -> None:
    sensor = _sensor(
        stack,
        serving__error_rate='sum(mape_model_server_requests_total{model="{model}",code="400"}) / '
                            'sum(mape_model_server_request_duration_seconds_count{model="{model}",path="/predict"})',
        serving__requests_per_second='sum(rate(mape_model_server_request_duration_seconds_count'
                                     '{model="{model}",path="/predict"}[1m]))',
        serving__latency_p95_ms='histogram_quantile(0.95, sum by (le) (rate('
                                'mape_model_server_request_duration_seconds_bucket{model="{model}",path="/predict"}'
                                '[1m]))) * 1000',
        serving__queue_depth='mape_test_queue_depth{model="{model}"}',
        gpu__devices="scalar(sum(mape_test_queue_depth))",
    )
    report = sensor.read("credit", utcnow())
    assert report.errors == ()
    assert report.values["serving.error_rate"] == _BAD / _PREDICTS
    assert report.values["serving.queue_depth"] == 7.5
    assert report.values["gpu.devices"] == 9.5  # a scalar result
    rate = report.values["serving.requests_per_second"]
    assert rate is not None and 0 < rate <= _PREDICTS  # a counter that grew within the last minute
    p95 = report.values["serving.latency_p95_ms"]
    assert p95 is not None and 0 < p95 <= 10_000  # inside the histogram's buckets, in milliseconds


def test_the_model_name_selects_the_series(stack: Stack) -> None:
    sensor = _sensor(stack, serving__queue_depth='mape_test_queue_depth{model="{model}"}',
                     serving__error_rate='sum(mape_model_server_requests_total{model="{model}",code="400"})')
    report = sensor.read("other", utcnow())
    assert report.values == {"serving.queue_depth": 2.0, "serving.error_rate": None}
    assert report.errors == ()


def test_missing_series_nan_and_infinity_are_absent_without_an_error(stack: Stack) -> None:
    sensor = _sensor(stack, serving__error_rate='sum(mape_model_server_requests_total{model="{model}",code="599"})',
                     serving__latency_p95_ms="mape_test_nan", serving__replicas="scalar(vector(1)) / 0",
                     serving__ready_replicas="mape_test_queue_depth")  # the vector holds only "credit" and "other"
    report = sensor.read("credit", utcnow())
    assert report.values["serving.error_rate"] is None
    assert report.values["serving.latency_p95_ms"] is None
    assert report.values["serving.replicas"] is None
    assert report.values["serving.ready_replicas"] is None
    assert len(report.errors) == 1  # only the two-series vector is an error
    assert prometheus_observations(1, utcnow(), report) == []


def test_more_than_one_series_is_absent_with_an_error_naming_query_and_count(stack: Stack) -> None:
    sensor = _sensor(stack, serving__replicas="mape_test_replica_load", serving__queue_depth="sum(mape_test_replica_load)")
    report = sensor.read("credit", utcnow())
    assert report.values == {"serving.replicas": None, "serving.queue_depth": 1.0}
    assert report.errors == ("Prometheus query of serving.replicas (mape_test_replica_load) returned 2 series, "
                             "not one; aggregate it with sum/max",)


def test_prometheus_refusing_a_query_is_an_error_with_its_message(stack: Stack) -> None:
    sensor = _sensor(stack, serving__replicas="sum(rate(mape_test_queue_depth[1m]",
                     serving__queue_depth="mape_test_queue_depth[1m]",
                     serving__error_rate='mape_test_queue_depth{model="{model}"}')
    report = sensor.read("credit", utcnow())
    refused, range_vector = report.errors
    assert refused.startswith("Prometheus query of serving.replicas (sum(rate(mape_test_queue_depth[1m]) failed: "
                              "HTTP 400: bad_data: ")
    assert "parse error" in refused  # Prometheus' own words
    assert "serving.queue_depth" in range_vector and "range vector" in range_vector
    assert report.values == {"serving.replicas": None, "serving.queue_depth": None, "serving.error_rate": 7.5}


def test_the_query_is_evaluated_at_the_tick_time(stack: Stack) -> None:
    sensor = _sensor(stack, serving__queue_depth='mape_test_queue_depth{model="{model}"}')
    assert sensor.read("credit", utcnow() - timedelta(hours=1)).values == {"serving.queue_depth": None}
    assert sensor.read("credit", utcnow()).values == {"serving.queue_depth": 7.5}


def test_observations_of_a_real_read(stack: Stack) -> None:
    at = utcnow()
    report = _sensor(stack, serving__queue_depth='mape_test_queue_depth{model="{model}"}',
                     serving__replicas="mape_test_nan").read("credit", at)
    rows = prometheus_observations(3, at, report)
    assert [(r.model_id, r.time, r.sensor, r.metric, r.value, r.labels) for r in rows] == [
        (3, at, "prometheus", "serving.queue_depth", 7.5, {})]


def test_prometheus_scrapes_the_controllers_own_metrics(stack: Stack) -> None:
    report = _sensor(stack, serving__replicas="sum(mape_ticks_total)",
                     serving__error_rate='sum(mape_tick_errors_total{stage="plan"})',
                     serving__queue_depth='sum(mape_tick_duration_seconds_count{job="controller"})').read("credit",
                                                                                                         utcnow())
    assert report.values == {"serving.replicas": 2.0, "serving.error_rate": 1.0, "serving.queue_depth": 2.0}


def test_a_query_that_works_again_is_logged_once_each_way(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    sensor = _sensor(stack, serving__replicas="mape_test_replica_load")
    with caplog.at_level(logging.INFO, logger="mape.monitor.sensors.prometheus"):
        sensor.read("credit", utcnow())
        sensor.read("credit", utcnow())
        sensor.queries["serving.replicas"] = "max(mape_test_replica_load)"
        assert sensor.read("credit", utcnow()).values == {"serving.replicas": 0.75}
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]


# ---------------------------------------------------------------------- a server that is down (no Prometheus needed)


_THREE = {"serving.latency_p95_ms": "a", "serving.error_rate": "b", "serving.requests_per_second": "c"}


def test_connection_refused_is_one_error_per_query_not_an_exception() -> None:
    sensor = PrometheusSensor(f"http://127.0.0.1:{free_port()}", _THREE, timeout=2.0)
    report = sensor.read("credit", datetime(2026, 1, 5, tzinfo=timezone.utc))
    assert report.values == dict.fromkeys(_THREE)
    assert len(report.errors) == 3
    assert all(e.startswith(f"Prometheus at {sensor.base_url} cannot be reached, so serving.") for e in report.errors)
    assert "ConnectionRefusedError" in report.errors[0]


def test_a_server_that_never_answers_costs_one_timeout_per_tick() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        sensor = PrometheusSensor(f"http://127.0.0.1:{silent.getsockname()[1]}", _THREE, timeout=0.5)
        at = datetime(2026, 1, 5, tzinfo=timezone.utc)
        started = time.monotonic()
        reports = [sensor.read(model, at) for model in ("credit", "fraud", "churn", "loans", "ads")]
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"{elapsed:.2f}s: more than one timeout in one tick"
    assert [len(r.errors) for r in reports] == [3] * 5
    assert "timed out" in reports[0].errors[0]
    assert all(v is None for r in reports for v in r.values.values())


def test_an_answer_that_is_not_prometheus_json_is_an_error() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotPrometheus(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>a proxy's login page</html>"
            self.send_response(502 if "502" in self.path else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotPrometheus)
    thread = _serve(server)
    try:
        sensor = PrometheusSensor(f"http://127.0.0.1:{server.server_address[1]}",
                                  {"serving.replicas": "up", "serving.error_rate": "502"})
        report = sensor.read("credit", utcnow())
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert report.values == {"serving.replicas": None, "serving.error_rate": None}
    assert report.errors[0].endswith("failed: the answer is not JSON: \"<html>a proxy's login page</html>\"")
    assert "failed: HTTP 502 Bad Gateway: " in report.errors[1]


# ---------------------------------------------------------------------- configuration


def test_metric_roots_are_the_measured_roots_of_the_context() -> None:
    derived = {"model", "promotion"}  # read from the knowledge base's versions, not measured by a sensor
    measured = {root for root, spec in CONTEXT_FIELDS.items() if spec.fields is not None and root not in derived}
    assert set(METRIC_ROOTS) == measured


def test_config_builds_the_sensor() -> None:
    config = PrometheusConfig(url="http://127.0.0.1:9090", timeout="2s",
                              queries={"serving.latency_p95_ms": 'histogram_quantile(0.95, x{model="{model}"})'})
    sensor = PrometheusSensor.from_config(config)
    assert (sensor.base_url, sensor.timeout) == ("http://127.0.0.1:9090", 2.0)
    assert sensor.promql("serving.latency_p95_ms", "credit") == 'histogram_quantile(0.95, x{model="credit"})'


@pytest.mark.parametrize(("queries", "message"), [
    ({"latency_p95_ms": "x"}, "metric name 'latency_p95_ms' must be <root>.<key>"),
    ({"servng.latency_p95_ms": "x"},
     "unknown root 'servng'; known: drift, performance, fairness, gpu, carbon, serving, quality"),
    ({"serving.Latency": "x"}, "the key a lower-case identifier"),
    ({"serving.latency_p95_ms": " "}, "at least 1 character"),
    ({}, "at least 1 item"),
])
def test_config_refuses_bad_queries(queries: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="queries") as caught:
        PrometheusConfig(url="http://127.0.0.1:9090", queries=queries)
    assert message in str(caught.value)


def test_config_refuses_a_bad_url_and_timeout() -> None:
    with pytest.raises(ValueError, match="url"):
        PrometheusConfig(url="127.0.0.1:9090", queries={"serving.replicas": "up"})
    with pytest.raises(ValueError, match="timeout must be longer than 0"):
        PrometheusConfig(url="http://127.0.0.1:9090", queries={"serving.replicas": "up"}, timeout="0s")


def test_sensor_parameters_are_checked() -> None:
    with pytest.raises(InvalidParameterError, match="The 'base_url' parameter of PrometheusSensor"):
        PrometheusSensor("127.0.0.1:9090", {"serving.replicas": "up"})
    with pytest.raises(InvalidParameterError, match="The 'timeout' parameter of PrometheusSensor"):
        PrometheusSensor("http://127.0.0.1:9090", {"serving.replicas": "up"}, timeout=0)
