"""A recorded Kubernetes API server on loopback: the Deployment and Scale endpoints that the kubernetes target uses.

Who uses it: the tests of :class:`mape.serving.kubernetes.KubernetesDeployment`
and of the ``rescale`` action on a kubernetes target. No cluster runs here, so
the official client talks HTTP to this server instead; its answers are the
JSON documents in ``k8s_recorded/`` (an ``autoscaling/v1`` Scale, an
``apps/v1`` Deployment with status, ``v1`` Status objects for errors; see the
README there), with the replica counts filled in from the server's state, so
that a PATCH changes what the next GET returns.

It answers, for each Deployment it holds:

* ``GET`` and ``PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``
* ``GET /apis/apps/v1/namespaces/{ns}/deployments/{name}``
* ``PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}`` with a strategic
  merge patch of ``spec.template`` (containers and their ``env`` merged by
  name, maps merged, other lists replaced, as kube-apiserver merges them): a
  changed pod template is a new generation

and, like kube-apiserver: 401 without the right bearer token, 404 for another
Deployment or path, 405 for another method, 415 for a PATCH whose
Content-Type is not a patch type, 422 for a negative or missing
``spec.replicas``. Tests can queue error answers (:meth:`RecordedApiServer.fail`)
and slow it down (``delay``). Every request is kept in ``requests``.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).with_name("k8s_recorded")
PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json")
_ROUTE = re.compile(r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments/(?P<name>[^/]+)(?P<scale>/scale)?$")
_ERROR_FILES = {401: "unauthorized", 403: "forbidden", 404: "not-found", 409: "conflict", 415: "unsupported-media-type",
                422: "invalid", 429: "too-many-requests", 500: "internal-error", 503: "service-unavailable"}
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


def recorded(name: str) -> Any:
    """One document of ``k8s_recorded/``, parsed."""
    return json.loads((RECORDED / f"{name}.json").read_text())


@dataclass
class DeploymentState:
    """What the server knows of one Deployment.

    ``ready`` None: every replica asked for is ready at once (the controller
    converged); an int: that many are, whatever is asked for. ``conditions``
    None: the recorded healthy conditions.
    """

    namespace: str
    name: str
    replicas: int = 2
    ready: int | None = None
    generation: int = 3
    observed_generation: int | None = None  # None: the controller has seen every generation
    resource_version: int = 482193
    conditions: list[dict[str, Any]] | None = None
    template: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(recorded("deployment")["spec"]["template"]))


@dataclass
class Request:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class _Failure:
    status: int
    method: str | None
    resource: str | None
    times: int


@dataclass
class RecordedApiServer:
    """A threaded HTTP server on 127.0.0.1 speaking the API server's Deployment endpoints; see the module."""

    token: str | None = "mape-test-token"
    deployments: dict[tuple[str, str], DeploymentState] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    delay: float = 0.0
    _failures: list[_Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ control

    def add(self, namespace: str, name: str, **state: Any) -> DeploymentState:
        deployment = DeploymentState(namespace, name, **state)
        self.deployments[(namespace, name)] = deployment
        return deployment

    def fail(self, status: int, *, method: str | None = None, resource: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests with the recorded ``status`` error.

        ``method`` (``"GET"``, ``"PATCH"``) and ``resource`` (``"scale"``,
        ``"deployment"``) narrow which requests fail; None: any.
        """
        assert status in _ERROR_FILES, f"no recorded answer for HTTP {status}"
        with self._lock:
            self._failures.append(_Failure(status, method, resource, times))

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RecordedApiServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="recorded-apiserver",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> RecordedApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ answers

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        """The status, JSON document and extra headers for one request."""
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode(errors="replace")
        with self._lock:
            self.requests.append(Request(method, path.split("?")[0], headers, parsed))
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                return self._status(401)
            match = _ROUTE.match(path.split("?")[0])
            if match is None:
                return 404, recorded("no-route"), {}
            ns, name, is_scale = match["ns"], match["name"], bool(match["scale"])
            resource = "scale" if is_scale else "deployment"
            for failure in self._failures:
                if failure.method in (None, method) and failure.resource in (None, resource) and failure.times > 0:
                    failure.times -= 1
                    return self._status(failure.status, ns, name)
            deployment = self.deployments.get((ns, name))
            if deployment is None:
                return self._status(404, ns, name)
            if method == "GET":
                return 200, (_scale(deployment) if is_scale else _deployment(deployment)), {}
            if method != "PATCH":
                return 405, _method_not_allowed(), {}
            content_type = headers.get("content-type", "").split(";")[0].strip()
            if content_type not in PATCH_TYPES:
                return self._status(415, ns, name)
            if not is_scale:
                return self._patch_template(deployment, content_type, parsed)
            replicas = _patched_replicas(content_type, parsed)
            if replicas is None or replicas < 0:
                return self._status(422, ns, name, value=replicas)
            before = _scale(deployment)
            if replicas != deployment.replicas:
                deployment.replicas = replicas
                deployment.generation += 1
                deployment.resource_version += 1
            answer = _scale(deployment)
            answer["status"] = before["status"]  # the pods change after the answer, as the controller acts
            return 200, answer, {}

    def _patch_template(self, d: DeploymentState, content_type: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """Merge a strategic merge patch of ``spec.template`` (the only part of a Deployment this server changes)."""
        spec = body.get("spec") if isinstance(body, dict) else None
        if content_type != "application/strategic-merge-patch+json" or not isinstance(spec, dict) \
                or set(spec) - {"template"} or not isinstance(spec.get("template"), dict):
            return self._status(422, d.namespace, d.name)
        merged = _strategic_merge(d.template, spec["template"])
        if merged != d.template:
            d.template = merged
            d.generation += 1
            d.resource_version += 1
        return 200, _deployment(d), {}

    def _status(self, code: int, ns: str = "ml", name: str = "ranker", *,
                value: Any = -1) -> tuple[int, Any, dict[str, str]]:
        status = recorded(_ERROR_FILES[code])
        status["message"] = (status["message"].replace('"ranker"', f'"{name}"').replace('"ml"', f'"{ns}"')
                             .replace("value: -1:", f"value: {json.dumps(value)}:"))
        if isinstance(status.get("details"), dict) and "name" in status["details"]:
            status["details"]["name"] = name
        headers = {"Retry-After": "1"} if code == 429 else {}
        return code, status, headers


def _scale(d: DeploymentState) -> dict[str, Any]:
    scale = recorded("scale")
    scale["metadata"].update(name=d.name, namespace=d.namespace, resourceVersion=str(d.resource_version))
    scale["spec"] = {"replicas": d.replicas} if d.replicas else {}  # omitempty: 0 is left out
    scale["status"]["replicas"] = _pods(d)
    scale["status"]["selector"] = f"app.kubernetes.io/name={d.name}"
    return scale


def _pods(d: DeploymentState) -> int:
    return d.replicas if d.ready is None else max(d.ready, 0)


def _deployment(d: DeploymentState) -> dict[str, Any]:
    doc = recorded("deployment")
    doc["metadata"].update(name=d.name, namespace=d.namespace, resourceVersion=str(d.resource_version),
                           generation=d.generation)
    doc["spec"]["replicas"] = d.replicas
    doc["spec"]["template"] = copy.deepcopy(d.template)
    ready = _pods(d)
    status: dict[str, Any] = {"observedGeneration": d.observed_generation or d.generation}
    for key, value in (("replicas", max(ready, d.replicas) if d.ready is not None else d.replicas),
                       ("updatedReplicas", d.replicas), ("readyReplicas", min(ready, d.replicas)),
                       ("availableReplicas", min(ready, d.replicas)),
                       ("unavailableReplicas", max(d.replicas - ready, 0))):
        if value:  # omitempty
            status[key] = value
    status["conditions"] = copy.deepcopy(d.conditions) if d.conditions is not None else doc["status"]["conditions"]
    doc["status"] = status
    return doc


#: The merge keys of the lists a strategic merge patch of a pod template merges item by item.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name", "ports":
               "containerPort", "volumeMounts": "mountPath"}


def _strategic_merge(current: Any, patch: Any, key: str | None = None) -> Any:
    """``patch`` merged into ``current`` as kube-apiserver merges a strategic merge patch (``null`` deletes)."""
    if isinstance(current, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(current)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = _strategic_merge(merged.get(name), value, name)
        return merged
    merge_key = _MERGE_KEYS.get(key or "")
    if isinstance(current, list) and isinstance(patch, list) and merge_key is not None:
        merged_list = copy.deepcopy(current)
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if isinstance(old, dict) and isinstance(item, dict)
                          and old.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = _strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def _patched_replicas(content_type: str, body: Any) -> int | None:
    if content_type == "application/json-patch+json":
        for op in body if isinstance(body, list) else []:
            if isinstance(op, dict) and op.get("path") == "/spec/replicas" and op.get("op") in ("replace", "add"):
                value = op.get("value")
                return value if isinstance(value, int) and not isinstance(value, bool) else None
        return None
    spec = body.get("spec") if isinstance(body, dict) else None
    value = spec.get("replicas") if isinstance(spec, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _method_not_allowed() -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server does not allow this method on the requested resource", "reason": "MethodNotAllowed",
            "details": {}, "code": 405}


def _handler(server: RecordedApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as kube-apiserver; every answer has a Content-Length

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, document, extra = server.answer(self.command, self.path, headers, body)
            if server.delay and server._stopping.wait(server.delay):
                return
            payload = json.dumps(document).encode()
            try:
                self.send_response(code, _REASONS.get(code))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Audit-Id", "0b7e6f0e-3c1b-4b5e-9e0a-6f1f2d3c4b5a")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                self.close_connection = True

        do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Silent: the tests read the recorded requests, not a request log on stderr."""

    return Handler
