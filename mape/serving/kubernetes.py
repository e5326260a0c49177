"""Replicas of one model as a Kubernetes Deployment, scaled through the Deployment's ``scale`` subresource.

Who calls it: the ``rescale`` effector (through the
:class:`mape.serving.target.ServingTarget` interface) and the Monitor's
serving sensor, both by way of :func:`mape.serving.factory.target_for`, for
models whose ``serving.target`` is ``kubernetes``.

It talks to the API server with the official client (``pip install
'mape[kubernetes]'``), imported on first use only, so installations without
Kubernetes never load it:

* :meth:`KubernetesDeployment.replicas` reads ``spec.replicas`` of the
  Deployment's ``autoscaling/v1`` Scale (``GET .../deployments/{name}/scale``),
  the count the Horizontal Pod Autoscaler also starts from;
* :meth:`KubernetesDeployment.scale` patches it (``PATCH .../scale`` with
  ``{"spec": {"replicas": n}}``; the client sends it as
  ``application/strategic-merge-patch+json``) and does nothing when the count is
  already ``n``;
* :meth:`KubernetesDeployment.health` reads the Deployment's status (ready,
  available and up-to-date replicas, conditions) into one sentence;
* :meth:`KubernetesDeployment.roll`, given the version its pods should serve
  (``artifact``: only with ``serving.kubernetes.promote: patch``), sets that
  model reference on the pod template (``PATCH .../deployments/{name}``, a
  strategic merge patch of the model container's environment and two
  annotations: :mod:`mape.serving.pod_template`), checks that the API server
  kept it, and waits up to ``rollout_timeout`` for the Deployment controller
  to replace the pods. The canary calls it on the canary Deployment before
  scaling it up, and on production's Deployment when it promotes.

The state lives in the cluster, so every controller tick (a fresh process)
sees the same replicas. Scaling never changes the pod template; apart from
:meth:`roll`'s model reference, the template is its owner's. The stabilization
window and step limits are applied before :meth:`scale` is called, by
:func:`mape.serving.target.plan_replicas`.

Every failure becomes a :class:`mape.errors.ServingError` naming the namespace,
the Deployment, the HTTP status and the API server's own message; it is
``transient`` (retried by the ``rescale`` action) for timeouts, refused or
broken connections, 409, 429 and 5xx answers, and permanent for the rest
(401, 403, 404, 422, a missing token, a bad kubeconfig). The client does not
retry on its own: retries are the executor's, so they are counted and
recorded in the action run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mape.errors import InvalidParameterError, ServingError
from mape.serving import pod_template
from mape.serving.pod_template import ModelReference
from mape.serving.target import ServingHealth, served_artifact

if TYPE_CHECKING:
    from mape.config import KubernetesServingConfig

__all__ = ["KubernetesDeployment"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_INSTALL_HINT = "the kubernetes serving target needs the Kubernetes client: pip install 'mape[kubernetes]'"
#: HTTP statuses after which the same request may succeed later (besides every 5xx).
_TRANSIENT_STATUSES = frozenset({408, 409, 429})


class KubernetesDeployment:
    """The replicas of one model as a Deployment in a Kubernetes cluster; a :class:`ServingTarget`.

    Parameters
    ----------
    model : str
        The managed model's name; named in every error.
    namespace, deployment : str
        Where the Deployment is and what it is called.
    kubeconfig : Path or None
        Kubeconfig file (None: ``$KUBECONFIG`` or ``~/.kube/config``); used
        unless ``api_server`` or ``in_cluster`` is given.
    context : str or None
        Kubeconfig context (None: the file's current context).
    in_cluster : bool
        Use the pod's service account token and CA.
    api_server : str or None
        API server URL, e.g. ``https://10.0.0.1:6443``, instead of a kubeconfig.
    token_env : str or None
        Environment variable holding the bearer token for ``api_server``; read
        when the first request is made.
    ca_cert : Path or None
        CA bundle for ``api_server``'s certificate.
    verify_tls : bool
        Check ``api_server``'s certificate.
    request_timeout : float
        Seconds one API request may take.
    endpoint : str or None
        URL clients reach the model at (its Service or Ingress); reported by
        :meth:`health` while any replica is ready.
    artifact : callable or None
        Returns ``(version, artifact_uri)`` of the version the pods should
        serve; :meth:`roll` sets it on the pod template. None: the pod
        template is someone else's (a delivery pipeline's), and :meth:`roll`
        changes nothing.
    container : str or None
        The pod template's container that serves the model (None: the first).
    rollout_timeout : float
        Seconds :meth:`roll` waits for the pods to run a changed pod template
        (0: it does not wait).

    Examples
    --------
    Nothing is imported or contacted until a method is called:

    >>> ranker = KubernetesDeployment("ranker", "ml", "ranker-server", api_server="https://10.0.0.1:6443")
    >>> print(ranker)
    Kubernetes deployment ml/ranker-server
    """

    def __init__(
        self,
        model: str,
        namespace: str,
        deployment: str,
        *,
        kubeconfig: Path | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        api_server: str | None = None,
        token_env: str | None = None,
        ca_cert: Path | None = None,
        verify_tls: bool = True,
        request_timeout: float = 10.0,
        endpoint: str | None = None,
        artifact: Callable[[], tuple[int, str]] | None = None,
        container: str | None = None,
        rollout_timeout: float = 60.0,
    ) -> None:
        owner = type(self).__name__
        if not isinstance(model, str) or not _MODEL_NAME.match(model):
            raise InvalidParameterError.for_parameter(
                "model", owner, "a name of letters, digits, '.', '_' and '-'", model)
        for name, value in (("namespace", namespace), ("deployment", deployment)):
            if not isinstance(value, str) or not value:
                raise InvalidParameterError.for_parameter(name, owner, "a non-empty str", value)
        number = isinstance(request_timeout, (int, float)) and not isinstance(request_timeout, bool)
        if not number or not request_timeout > 0:
            raise InvalidParameterError.for_parameter("request_timeout", owner, "a number of seconds > 0",
                                                      request_timeout)
        number = isinstance(rollout_timeout, (int, float)) and not isinstance(rollout_timeout, bool)
        if not number or not rollout_timeout >= 0:
            raise InvalidParameterError.for_parameter("rollout_timeout", owner, "a number of seconds >= 0",
                                                      rollout_timeout)
        self.model = model
        self.namespace = namespace
        self.deployment = deployment
        self.kubeconfig = kubeconfig
        self.context = context
        self.in_cluster = in_cluster
        self.api_server = api_server
        self.token_env = token_env
        self.ca_cert = ca_cert
        self.verify_tls = verify_tls
        self.request_timeout = float(request_timeout)
        self.endpoint = endpoint
        self.artifact = artifact
        self.container = container
        self.rollout_timeout = float(rollout_timeout)
        self._apps: Any = None  # kubernetes.client.AppsV1Api, made on first use
        self._host: str | None = None

    @classmethod
    def from_config(cls, model: str, cfg: KubernetesServingConfig, *, canary: bool = False,
                    artifact: Callable[[], tuple[int, str]] | None = None) -> KubernetesDeployment:
        """The Deployment a model's ``serving.kubernetes`` section names (``canary``: its canary Deployment).

        ``artifact`` (the version its pods should serve) is kept only when
        ``promote`` is ``patch``: with ``pipeline`` the pod templates are the
        delivery pipeline's, and :meth:`roll` leaves them alone.
        """
        return cls(model, cfg.namespace, cfg.canary if canary else cfg.deployment, kubeconfig=cfg.kubeconfig,
                   context=cfg.context, in_cluster=cfg.in_cluster, api_server=cfg.api_server,
                   token_env=cfg.token_env, ca_cert=cfg.ca_cert, verify_tls=cfg.verify_tls,
                   request_timeout=cfg.request_timeout.total_seconds(), endpoint=cfg.endpoint,
                   artifact=artifact if cfg.promote == "patch" else None, container=cfg.container,
                   rollout_timeout=cfg.rollout_timeout.total_seconds())

    def __str__(self) -> str:
        return f"Kubernetes deployment {self.namespace}/{self.deployment}"

    def __repr__(self) -> str:
        return f"KubernetesDeployment({self.model!r}, {self.namespace!r}, {self.deployment!r})"

    # ------------------------------------------------------------------ ServingTarget

    def replicas(self) -> int:
        """The replicas the Deployment asks for: ``spec.replicas`` of its Scale.

        Raises
        ------
        ServingError
            When the API server cannot be reached or refuses the request.
        """
        scale = self._call("read the scale of", lambda apps: apps.read_namespaced_deployment_scale(
            self.deployment, self.namespace, _request_timeout=self.request_timeout))
        return _spec_replicas(scale)

    def scale(self, n: int) -> int:
        """Set the Deployment's replicas to ``n``; return the count the API server accepted.

        The pods start and stop afterwards, as the Deployment controller
        rolls them out; :meth:`health` tells how far it got. Calling it again
        with the same ``n`` sends no patch.

        Raises
        ------
        InvalidParameterError
            When ``n`` is not an int >= 0.
        ServingError
            When the API server cannot be reached or refuses the read or the patch.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidParameterError.for_parameter("n", f"{type(self).__name__}.scale", "an int >= 0", n)
        current = self.replicas()
        if current == n:
            return n
        answer = self._call("scale", lambda apps: apps.patch_namespaced_deployment_scale(
            self.deployment, self.namespace, {"spec": {"replicas": n}}, _request_timeout=self.request_timeout))
        accepted = _spec_replicas(answer)
        log.info("%s of model %s scaled from %d to %d replicas", self, self.model, current, accepted)
        return accepted

    def health(self) -> ServingHealth:
        """Read the Deployment's status: ready replicas, and a sentence naming what is wrong.

        Raises
        ------
        ServingError
            When the API server cannot be reached or refuses the request.
        """
        deployment = self._call("read the status of", lambda apps: apps.read_namespaced_deployment(
            self.deployment, self.namespace, _request_timeout=self.request_timeout))
        return _deployment_health(deployment, self.endpoint)

    # ------------------------------------------------------------------ the model reference

    def roll(self) -> int:
        """Point the pod template at the version ``artifact`` names; return how many pods are replaced.

        Nothing happens (0) without ``artifact``, or when the pod template
        names that version already, so calling it again sends no patch. After
        the patch, the API server's answer must hold the new reference; then
        it waits up to ``rollout_timeout`` for the Deployment controller to
        replace the pods (:meth:`health` tells how far a slower rollout got).

        Raises
        ------
        ServingError
            When ``artifact`` fails, the API server cannot be reached or
            refuses the read or the patch, the pod template has no such
            container, or the answer does not hold the new reference.
        """
        if self.artifact is None:
            return 0
        wanted = ModelReference(*served_artifact(self.artifact, model=self.model, target=str(self)))
        container = self._container()
        before = pod_template.reference_of(container)
        if before == wanted:
            return 0
        body = pod_template.reference_patch(str(container["name"]), wanted)
        answer = self._document(self._call("set the model version on the pod template of",
                                           lambda apps: apps.patch_namespaced_deployment(
                                               self.deployment, self.namespace, body,
                                               _request_timeout=self.request_timeout)))
        kept = pod_template.reference_of(pod_template.container_of(
            (answer.get("spec") or {}).get("template") or {}, str(container["name"])))
        if kept != wanted:
            raise ServingError(f"{self}: the API server accepted the patch of the pod template, but its answer "
                               f"names {kept or 'no model version'} instead of {wanted}; is an admission webhook "
                               f"rewriting container {container['name']}'s environment?", model=self.model,
                               transient=False)
        replicas = int((answer.get("spec") or {}).get("replicas") or 0)
        log.info("%s of model %s now serves %s (was %s); %d pod(s) are replaced", self, self.model, wanted,
                 before or "unnamed", replicas)
        self._await_rollout(int((answer.get("metadata") or {}).get("generation") or 0))
        return replicas

    def _container(self) -> dict[str, Any]:
        """The pod template's model container, as the API's JSON."""
        deployment = self._document(self._call("read the pod template of", lambda apps: apps.read_namespaced_deployment(
            self.deployment, self.namespace, _request_timeout=self.request_timeout)))
        template = (deployment.get("spec") or {}).get("template") or {}
        container = pod_template.container_of(template, self.container)
        if container is None or not container.get("name"):
            names = [c.get("name") for c in (template.get("spec") or {}).get("containers") or []]
            what = f"no container {self.container!r}" if self.container else "no container"
            raise ServingError(f"{self}: its pod template has {what} (it has {names or 'none'}); check "
                               f"serving.kubernetes.container", model=self.model, transient=False)
        return container

    def _await_rollout(self, generation: int) -> None:
        """Wait up to ``rollout_timeout`` for the pods of pod template generation ``generation``; log if they lag."""
        deadline = time.monotonic() + self.rollout_timeout
        while True:
            deployment = self._document(self._call("read the rollout of", lambda apps: apps.read_namespaced_deployment(
                self.deployment, self.namespace, _request_timeout=self.request_timeout)))
            waiting = pod_template.rollout_progress(deployment, generation)
            if waiting is None:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("%s of model %s is still rolling out after %gs: %s; the Deployment controller goes on",
                            self, self.model, self.rollout_timeout, waiting)
                return
            time.sleep(min(1.0, left))

    def _document(self, obj: Any) -> dict[str, Any]:
        """An object of the client as the API's JSON document (camelCase keys)."""
        document = self._client().api_client.sanitize_for_serialization(obj)
        return document if isinstance(document, dict) else {}

    # ------------------------------------------------------------------ the API

    def _call(self, verb: str, request: Callable[[Any], _T]) -> _T:
        """Run one request; turn every failure into a :class:`ServingError` that says what to do."""
        apps = self._client()
        import urllib3
        from kubernetes.client.exceptions import ApiException

        where = f"cannot {verb} {self}"
        try:
            return request(apps)
        except ApiException as exc:
            raise self._api_error(where, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_error(where, exc) from None
        except OSError as exc:
            raise ServingError(f"{where}: {type(exc).__name__}: {exc}", model=self.model) from None
        except ValueError as exc:  # the client could not read the answer (pydantic's ValidationError is one)
            raise ServingError(f"{where}: the client cannot read the answer of the API server at {self._host}: "
                               f"{_first_line(exc)}", model=self.model, transient=False) from None

    def _client(self) -> Any:
        if self._apps is not None:
            return self._apps
        try:
            from kubernetes import client
        except ImportError:
            raise ServingError(_INSTALL_HINT, model=self.model, transient=False) from None
        configuration = client.Configuration()
        if self.api_server is not None:
            configuration.host = self.api_server.rstrip("/")
            configuration.verify_ssl = self.verify_tls
            if self.ca_cert is not None:
                configuration.ssl_ca_cert = str(Path(self.ca_cert).expanduser())
            if self.token_env is not None:
                token = os.environ.get(self.token_env, "").strip()
                if not token:
                    raise ServingError(f"cannot reach {self}: the environment variable {self.token_env} "
                                       f"(serving.kubernetes.token_env) that should hold the API token is not set",
                                       model=self.model, transient=False)
                configuration.api_key = {"authorization": f"Bearer {token}"}  # as load_kube_config sets it
        else:
            self._load_credentials(configuration)
        configuration.retries = 0  # failures go back to the executor, which retries and records each attempt
        self._host = configuration.host
        self._apps = client.AppsV1Api(client.ApiClient(configuration))
        return self._apps

    def _load_credentials(self, configuration: Any) -> None:
        from kubernetes import config

        if self.in_cluster:
            source = "the pod's service account (serving.kubernetes.in_cluster)"
            load: Callable[[], None] = lambda: config.load_incluster_config(client_configuration=configuration)
        else:
            path = Path(self.kubeconfig).expanduser() if self.kubeconfig is not None else None
            source = f"the kubeconfig {path}" if path else "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
            if self.context:
                source += f", context {self.context}"
            load = lambda: config.load_kube_config(  # noqa: E731
                config_file=str(path) if path else None, context=self.context,
                client_configuration=configuration, persist_config=False)
        try:
            load()
        except Exception as exc:  # noqa: BLE001 - ConfigException, a missing file, bad YAML: all one failure here
            raise ServingError(f"cannot reach {self}: cannot load {source}: {_first_line(exc)}",
                               model=self.model, transient=False) from None

    def _api_error(self, where: str, exc: Any) -> ServingError:
        status = int(exc.status or 0)
        reason = str(exc.reason or "").strip()
        if status == 0:  # raised by the client itself (TLS handshake, a request it cannot encode)
            return ServingError(f"{where}: {_first_line(reason) or 'the client failed'} (API server {self._host})",
                                model=self.model, transient=False)
        said = _status_message(exc.body)
        text = f"{where}: HTTP {status} {reason}".rstrip()
        if said and said.lower() != reason.lower():
            text += f": {said}"
        hint = self._hint(status, exc)
        if hint:
            text += f"; {hint}"
        return ServingError(text, model=self.model, transient=status in _TRANSIENT_STATUSES or status >= 500)

    def _hint(self, status: int, exc: Any) -> str:
        if status == 401:
            if self.api_server is not None and self.token_env is None:
                return (f"the API server at {self._host} wants credentials: name the environment variable "
                        f"holding a token in serving.kubernetes.token_env")
            source = f"the token in {self.token_env}" if self.token_env else "the credentials"
            return f"the API server at {self._host} does not accept {source} (wrong or expired?)"
        if status == 403:
            return (f"the credentials need RBAC permission to get and patch deployments/scale and to get "
                    f"deployments in namespace {self.namespace}" + (
                        " (and to patch deployments: serving.kubernetes.promote is patch)"
                        if self.artifact is not None else ""))
        if status == 404:
            return "check serving.kubernetes.namespace and serving.kubernetes.deployment"
        if status == 429:
            after = (getattr(exc, "headers", None) or {}).get("Retry-After")
            return "the API server is throttling requests" + (f" (retry after {after}s)" if after else "")
        if status >= 500:
            return "the API server failed"
        return ""

    def _transport_error(self, where: str, exc: Exception) -> ServingError:
        import urllib3

        cause: BaseException = getattr(exc, "reason", None) or exc  # MaxRetryError wraps the failure
        timeout = f"{self.request_timeout:g}s"
        if isinstance(cause, urllib3.exceptions.SSLError):
            return ServingError(f"{where}: the TLS handshake with the API server at {self._host} failed: "
                                f"{_first_line(cause)}; check serving.kubernetes.ca_cert", model=self.model,
                                transient=False)
        if isinstance(cause, urllib3.exceptions.NewConnectionError):  # before timeouts: it is a subclass of one
            said = "connection refused" if _refused(cause) else _first_line(cause)
            problem = f"cannot connect to the API server at {self._host}: {said}"
        elif isinstance(cause, urllib3.exceptions.TimeoutError):
            problem = f"the API server at {self._host} did not answer within {timeout}"
        elif isinstance(cause, urllib3.exceptions.ProtocolError):
            problem = f"the connection to the API server at {self._host} broke: {_first_line(cause)}"
        else:
            problem = f"the API server at {self._host} cannot be reached: {type(cause).__name__}: {_first_line(cause)}"
        return ServingError(f"{where}: {problem}", model=self.model)


# ---------------------------------------------------------------------- helpers


def _spec_replicas(scale: Any) -> int:
    """``spec.replicas`` of a Scale; the API server leaves it out when it is 0 (``omitempty``)."""
    spec = getattr(scale, "spec", None)
    return int(getattr(spec, "replicas", None) or 0)


def _deployment_health(deployment: Any, endpoint: str | None) -> ServingHealth:
    """One reading of an ``apps/v1`` Deployment: counts, and a sentence with every condition that is not well."""
    spec, status, meta = deployment.spec, deployment.status, deployment.metadata
    desired = int(getattr(spec, "replicas", None) or 0)
    ready = int(getattr(status, "ready_replicas", None) or 0)
    available = int(getattr(status, "available_replicas", None) or 0)
    updated = int(getattr(status, "updated_replicas", None) or 0)
    running = int(getattr(status, "replicas", None) or 0)
    head = f"{ready} of {desired} replicas ready"
    counts = []
    if available != ready:
        counts.append(f"{available} available")
    if updated < desired:
        counts.append(f"{updated} up to date")
    if running > desired:
        counts.append(f"{running - desired} more still stopping")
    if counts:
        head += f" ({', '.join(counts)})"
    notes = [head]
    generation = getattr(meta, "generation", None)
    observed = getattr(status, "observed_generation", None)
    if generation is not None and (observed is None or observed < generation):
        notes.append("the Deployment controller has not yet acted on the latest change")
    for condition in getattr(status, "conditions", None) or []:
        kind, state = condition.type, condition.status
        bad = (kind in ("Available", "Progressing") and state == "False") or (kind == "ReplicaFailure" and
                                                                                state == "True")
        if bad:
            said = ": ".join(p for p in (condition.reason, condition.message) if p)
            notes.append(f"{kind} is {state}" + (f" ({said})" if said else ""))
    endpoints = [endpoint] if endpoint and ready > 0 else []
    return ServingHealth(replicas=desired, ready=ready, endpoints=endpoints, detail="; ".join(notes))


def _status_message(body: Any) -> str:
    """The ``message`` of a ``v1 Status`` the API server answered with, or the body's first line."""
    if not body:
        return ""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        status = json.loads(body)
    except ValueError:
        return _first_line(body)[:200]
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return status["message"].strip()
    return ""


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "refused" in str(exc).lower()


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""
