"""The model reference on a Kubernetes pod template: which model version a Deployment's pods serve.

Who calls it: :class:`mape.serving.kubernetes.KubernetesDeployment` reads and
sets the reference when a canary starts (on the canary Deployment) and when a
canary is promoted (on production's Deployment), for models whose
``serving.kubernetes.promote`` is ``patch``; the model server
(:mod:`mape.serving.model_server`) reads the same environment variables when
it is started without ``--artifact`` and ``--version``, as a pod's container
is.

The reference is two environment variables of the container that serves the
model, :data:`VERSION_ENV` and :data:`ARTIFACT_ENV`, mirrored in two
annotations of the pod template (:data:`VERSION_ANNOTATION`,
:data:`ARTIFACT_ANNOTATION`) so ``kubectl describe`` shows it. Changing it
changes the pod template, so the Deployment controller replaces the pods
(its rolling update), and new pods load the version named. Everything here is
pure: it works on the API's JSON documents (camelCase keys, as the API server
sends them).

>>> reference = ModelReference(2, "s3://models/ranker/run-12")
>>> body = reference_patch("model-server", reference)
>>> body["spec"]["template"]["spec"]["containers"][0]["env"][0]
{'name': 'MAPE_MODEL_VERSION', 'value': '2'}
>>> template = {"spec": {"containers": [{"name": "model-server", "env": body["spec"]["template"]["spec"]
...                                                                    ["containers"][0]["env"]}]}}
>>> reference_of(container_of(template, None)) == reference
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ARTIFACT_ANNOTATION", "ARTIFACT_ENV", "VERSION_ANNOTATION", "VERSION_ENV", "ModelReference",
           "container_of", "reference_of", "reference_patch", "rollout_progress"]

#: Environment variable naming the model version a container serves.
VERSION_ENV = "MAPE_MODEL_VERSION"
#: Environment variable naming the artifact URI a container loads.
ARTIFACT_ENV = "MAPE_ARTIFACT_URI"
#: Pod template annotation mirroring :data:`VERSION_ENV`.
VERSION_ANNOTATION = "mape.io/model-version"
#: Pod template annotation mirroring :data:`ARTIFACT_ENV`.
ARTIFACT_ANNOTATION = "mape.io/artifact-uri"


@dataclass(frozen=True)
class ModelReference:
    """A model version and the artifact its replicas load."""

    version: int
    artifact_uri: str

    def __str__(self) -> str:
        return f"version {self.version} ({self.artifact_uri})"


def container_of(template: dict[str, Any], name: str | None) -> dict[str, Any] | None:
    """The container of a pod template (``template.spec.containers``) called ``name``, or the first; None if none.

    >>> container_of({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}, "b")
    {'name': 'b'}
    >>> print(container_of({"spec": {"containers": [{"name": "a"}]}}, "c"))
    None
    """
    containers = ((template or {}).get("spec") or {}).get("containers") or []
    if name is None:
        return containers[0] if containers else None
    return next((c for c in containers if c.get("name") == name), None)


def reference_of(container: dict[str, Any] | None) -> ModelReference | None:
    """The model reference in a container's environment, or None when it names none (or not a whole one)."""
    if container is None:
        return None
    env = {item.get("name"): item.get("value") for item in container.get("env") or [] if isinstance(item, dict)}
    version, uri = env.get(VERSION_ENV), env.get(ARTIFACT_ENV)
    if not isinstance(version, str) or not version.strip().isdigit() or not isinstance(uri, str) or not uri:
        return None
    return ModelReference(int(version), uri)


def reference_patch(container: str, reference: ModelReference) -> dict[str, Any]:
    """The strategic merge patch of a Deployment that sets ``reference`` on its pod template's ``container``.

    A strategic merge patch merges ``containers`` by name and ``env`` by
    name, so the container's other settings and other variables stay as the
    pod template's owner wrote them.
    """
    return {"spec": {"template": {
        "metadata": {"annotations": {VERSION_ANNOTATION: str(reference.version),
                                     ARTIFACT_ANNOTATION: reference.artifact_uri}},
        "spec": {"containers": [{"name": container, "env": [
            {"name": VERSION_ENV, "value": str(reference.version)},
            {"name": ARTIFACT_ENV, "value": reference.artifact_uri}]}]},
    }}}


def rollout_progress(deployment: dict[str, Any], generation: int) -> str | None:
    """What a Deployment's rollout of its ``generation``-th spec still waits for; None once it is done.

    Done, as ``kubectl rollout status`` tells it: the Deployment controller saw
    the generation, every replica asked for runs the new pod template and is
    available, and no replica of the old one is left.

    >>> deployment = {"metadata": {"generation": 4}, "spec": {"replicas": 3},
    ...               "status": {"observedGeneration": 4, "replicas": 4, "updatedReplicas": 2,
    ...                          "availableReplicas": 3}}
    >>> rollout_progress(deployment, 4)
    '2 of 3 replicas run the new pod template, 2 old ones are still running'
    >>> deployment["status"].update(replicas=3, updatedReplicas=3)
    >>> print(rollout_progress(deployment, 4))
    None
    """
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is None or int(observed) < generation:
        return "the Deployment controller has not yet acted on the new pod template"
    desired = int(spec.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    running = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    waits = []
    if updated < desired:
        waits.append(f"{updated} of {desired} replicas run the new pod template")
    if running > updated:
        waits.append(f"{running - updated} old ones are still running")
    if available < updated:
        waits.append(f"{updated - available} new ones are not available yet")
    return ", ".join(waits) if waits else None
