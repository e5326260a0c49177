"""One model-server process: a stored estimator behind ``/predict``, ``/health`` and ``/metrics``.

Who calls it: :class:`mape.serving.local.LocalReplicaSet` starts one
process per replica as
``python -m mape.serving.model_server --artifact URI --port N --model NAME --version V``;
people may run it by hand the same way, and a Kubernetes pod template may
leave ``--artifact`` and ``--version`` out: they default to
``$MAPE_ARTIFACT_URI`` and ``$MAPE_MODEL_VERSION``, which mape sets on the pod
template when it points a Deployment at a version
(:mod:`mape.serving.pod_template`). It needs nothing beyond the standard
library's :class:`http.server.ThreadingHTTPServer`, the artifact loader of
:mod:`mape.execute.training` and, for ``/metrics``, ``prometheus_client``
(the exposition text is written by hand when it is missing).

Endpoints
---------
``GET /health``
    200 and ``{"status": "ok", "model": ..., "version": ..., "pid": ...}``.
``POST /predict``
    Body ``{"rows": [{"feature": value, ...}, ...]}``; 200 and
    ``{"predictions": [...], "version": V}``. The rows become a pandas
    DataFrame; when the estimator knows its feature names
    (``feature_names_in_``) those columns are used, in that order. A body that
    is not such JSON, or rows the estimator cannot predict on, answer 400 and
    ``{"error": "..."}`` saying what was wrong.
``GET /metrics``
    Prometheus text: ``mape_model_server_requests_total{code=...}``, the
    request latency histogram ``mape_model_server_request_duration_seconds``
    and ``mape_model_server_info{model=...,version=...}``.

Once listening it prints ``serving MODEL vV on http://HOST:PORT`` to stdout.
SIGTERM (or SIGINT) stops it: the listener closes and the process exits 0.
It exits 2 when the artifact cannot be loaded and 3 when the port is taken,
after one line on stderr saying so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EXIT_ARTIFACT = 2
EXIT_PORT_IN_USE = 3
MAX_BODY_BYTES = 16 * 1024 * 1024
_PATHS = ("/predict", "/health", "/metrics")


class BadRequest(Exception):
    """The request cannot be answered; the message goes back to the client as ``{"error": ...}``."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- metrics


class Metrics:
    """Request counts by status code and request latency, as Prometheus text.

    Uses ``prometheus_client`` with a registry of its own when it can be
    imported, else keeps the same series itself.

    >>> m = Metrics(model="credit", version=3)
    >>> m.observe("/predict", 200, 0.004)
    >>> text = m.exposition().decode()
    >>> 'mape_model_server_requests_total{code="200"} 1.0' in text
    True
    """

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, *, model: str, version: int) -> None:
        self.model = model
        self.version = version
        self._lock = threading.Lock()
        try:
            import prometheus_client as prom
        except ImportError:
            self._prom: Any = None
            self._counts: dict[str, int] = {}
            self._buckets: dict[str, list[int]] = {}
            self._sums: dict[str, float] = {}
            self.content_type = "text/plain; version=0.0.4; charset=utf-8"
            return
        self._prom = prom
        self._registry = prom.CollectorRegistry(auto_describe=True)
        self._requests = prom.Counter("mape_model_server_requests", "HTTP requests answered, by status code.",
                                      ["code"], registry=self._registry)
        self._latency = prom.Histogram("mape_model_server_request_duration_seconds",
                                       "Time from reading a request to sending its answer, by endpoint.",
                                       ["path"], buckets=self.BUCKETS, registry=self._registry)
        info = prom.Gauge("mape_model_server_info", "The model and version this process serves (always 1).",
                          ["model", "version"], registry=self._registry)
        info.labels(model=model, version=str(version)).set(1)
        self.content_type = prom.CONTENT_TYPE_LATEST

    def observe(self, path: str, code: int, seconds: float) -> None:
        """Count one answered request; ``path`` outside the known endpoints is recorded as ``other``."""
        path = path if path in _PATHS else "other"
        if self._prom is not None:
            self._requests.labels(code=str(code)).inc()
            self._latency.labels(path=path).observe(seconds)
            return
        with self._lock:
            self._counts[str(code)] = self._counts.get(str(code), 0) + 1
            buckets = self._buckets.setdefault(path, [0] * (len(self.BUCKETS) + 1))
            for i, bound in enumerate((*self.BUCKETS, math.inf)):
                if seconds <= bound:
                    buckets[i] += 1
            self._sums[path] = self._sums.get(path, 0.0) + seconds

    def exposition(self) -> bytes:
        """The current values in the Prometheus text format."""
        if self._prom is not None:
            return bytes(self._prom.generate_latest(self._registry))
        with self._lock:
            lines = ["# HELP mape_model_server_requests_total HTTP requests answered, by status code.",
                     "# TYPE mape_model_server_requests_total counter"]
            lines += [f'mape_model_server_requests_total{{code="{code}"}} {float(n)}'
                      for code, n in sorted(self._counts.items())]
            name = "mape_model_server_request_duration_seconds"
            lines += [f"# HELP {name} Time from reading a request to sending its answer, by endpoint.",
                      f"# TYPE {name} histogram"]
            for path, buckets in sorted(self._buckets.items()):
                for bound, n in zip((*self.BUCKETS, math.inf), buckets):
                    le = "+Inf" if bound == math.inf else repr(float(bound))
                    lines.append(f'{name}_bucket{{le="{le}",path="{path}"}} {float(n)}')
                lines.append(f'{name}_count{{path="{path}"}} {float(buckets[-1])}')
                lines.append(f'{name}_sum{{path="{path}"}} {self._sums[path]}')
            lines += ["# HELP mape_model_server_info The model and version this process serves (always 1).",
                      "# TYPE mape_model_server_info gauge",
                      f'mape_model_server_info{{model="{_label(self.model)}",version="{self.version}"}} 1.0']
        return ("\n".join(lines) + "\n").encode()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --------------------------------------------------------------------------- predictions


def predict(estimator: Any, payload: Any) -> list[Any]:
    """Predictions of ``estimator`` for the rows of a ``/predict`` body, as plain JSON values.

    Raises :class:`BadRequest` naming what is wrong with the body or the rows.

    >>> class Twice:
    ...     def predict(self, X): return X["x"].to_numpy() * 2
    >>> predict(Twice(), {"rows": [{"x": 1}, {"x": 2.5}]})
    [2.0, 5.0]
    >>> predict(Twice(), {"rows": [{"y": 1}]})
    Traceback (most recent call last):
    ...
    mape.serving.model_server.BadRequest: prediction failed: KeyError: 'x'
    """
    import pandas as pd

    if not isinstance(payload, dict) or "rows" not in payload:
        raise BadRequest('the body must be a JSON object with a "rows" list, e.g. {"rows": [{"x": 1.0}]}')
    rows = payload["rows"]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise BadRequest('"rows" must be a list of objects mapping feature names to values')
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        missing = [str(name) for name in names if name not in frame.columns]
        if missing:
            raise BadRequest(f"rows lack the feature(s) {', '.join(missing)} that the model needs")
        frame = frame[list(names)]
    try:
        predictions = estimator.predict(frame)
    except Exception as exc:  # noqa: BLE001 - whatever the estimator raises is the client's bad input
        raise BadRequest(f"prediction failed: {type(exc).__name__}: {exc}") from None
    return [_plain(value) for value in _as_list(predictions)]


def _as_list(values: Any) -> list[Any]:
    tolist = getattr(values, "tolist", None)
    return list(tolist() if callable(tolist) else values)


def _plain(value: Any) -> Any:
    """A JSON-safe value: numpy scalars and arrays become Python ones, NaN and infinities become None."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        value = item()
    elif hasattr(value, "tolist"):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --------------------------------------------------------------------------- HTTP


class ModelServer(ThreadingHTTPServer):
    """The listening socket plus what every request needs: the estimator, its name and version, the metrics."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, estimator: Any, model: str, version: int) -> None:
        self.estimator = estimator
        self.model = model
        self.version = version
        self.metrics = Metrics(model=model, version=version)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with socket.getfqdn(), which can stall without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle kept-alive connection may hold its thread

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _get(self) -> tuple[int, bytes, str]:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self._json(HTTPStatus.OK, {"status": "ok", "model": self.server.model,
                                              "version": self.server.version, "pid": os.getpid()})
        if path == "/metrics":
            return HTTPStatus.OK, self.server.metrics.exposition(), self.server.metrics.content_type
        if path == "/predict":
            raise BadRequest("/predict takes POST", HTTPStatus.METHOD_NOT_ALLOWED)
        raise BadRequest(f"no endpoint {path}; use /predict, /health or /metrics", HTTPStatus.NOT_FOUND)

    def _post(self) -> tuple[int, bytes, str]:
        path = self.path.split("?", 1)[0]
        if path != "/predict":
            status = HTTPStatus.METHOD_NOT_ALLOWED if path in _PATHS else HTTPStatus.NOT_FOUND
            raise BadRequest(f"POST {path} is not served; POST /predict", status)
        payload = self._read_json()
        predictions = predict(self.server.estimator, payload)
        return self._json(HTTPStatus.OK, {"predictions": predictions, "version": self.server.version})

    def _read_json(self) -> Any:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise BadRequest("the request has no Content-Length header", HTTPStatus.LENGTH_REQUIRED)
        try:
            length = int(length_header)
        except ValueError:
            raise BadRequest(f"Content-Length {length_header!r} is not a number") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise BadRequest(f"the body of {length} bytes is larger than the {MAX_BODY_BYTES} allowed",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self.rfile.read(length)
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None

    def _json(self, status: int, document: Any) -> tuple[int, bytes, str]:
        return status, json.dumps(document, allow_nan=False).encode(), "application/json"

    def _answer(self, handle: Any) -> None:
        started = time.perf_counter()
        try:
            status, body, content_type = handle()
        except BadRequest as exc:
            status, body, content_type = self._json(exc.status, {"error": str(exc)})
            if exc.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE or exc.status == HTTPStatus.LENGTH_REQUIRED:
                self.close_connection = True  # the unread body would be taken for the next request
        except Exception as exc:  # noqa: BLE001 - a bug answers 500, the server keeps serving
            status, body, content_type = self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                                                    {"error": f"{type(exc).__name__}: {exc}"})
        # counted before the answer is written: a client that reads /metrics right after its answer sees it counted
        self.server.metrics.observe(self.path.split("?", 1)[0], int(status), time.perf_counter() - started)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if isinstance(code, HTTPStatus):
            code = code.value
        if isinstance(code, int) and code >= 400:  # successful requests are counted in /metrics, not logged
            super().log_request(code, size)


# --------------------------------------------------------------------------- process


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    from mape.serving.pod_template import ARTIFACT_ENV, VERSION_ENV

    parser = argparse.ArgumentParser(prog="python -m mape.serving.model_server",
                                     description="Serve one stored model version over HTTP.")
    artifact, version = os.environ.get(ARTIFACT_ENV) or None, os.environ.get(VERSION_ENV) or None
    parser.add_argument("--artifact", required=artifact is None, default=artifact,
                        help=f"Artifact URI (file:// directory or path); default: ${ARTIFACT_ENV}, as a pod template "
                             f"that mape points at a version sets it.")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on.")
    parser.add_argument("--model", required=True, help="The managed model's name.")
    parser.add_argument("--version", type=int, required=version is None, default=version,
                        help=f"The model version the artifact holds; default: ${VERSION_ENV}.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the artifact, listen, serve until SIGTERM or SIGINT; return the exit status."""
    args = _arguments(argv)
    from mape.data.artifacts import load_artifact

    try:
        import prometheus_client

        prometheus_client.disable_created_metrics()  # the *_created series only add noise to a scrape
    except ImportError:
        pass

    try:
        estimator = load_artifact(args.artifact)
        if not hasattr(estimator, "predict"):
            raise TypeError(f"{type(estimator).__name__} has no predict()")
    except Exception as exc:  # noqa: BLE001 - any failure to load ends the process with one line
        print(f"Model server of {args.model} v{args.version} cannot load artifact {args.artifact}: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_ARTIFACT
    try:
        server = ModelServer((args.host, args.port), estimator=estimator, model=args.model, version=args.version)
    except OSError as exc:
        print(f"Model server of {args.model} v{args.version} cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr, flush=True)
        return EXIT_PORT_IN_USE

    def stop(signum: int, _frame: Any) -> None:
        # shutdown() waits for serve_forever() to return, so it must not run on serve_forever()'s thread
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving {args.model} v{args.version} on {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    print(f"Model server of {args.model} v{args.version} on {server.url} stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
