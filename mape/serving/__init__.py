"""Serving targets: where a model's replicas run, and how many may run.

Who calls it: the ``rescale`` effector plans a step with
:func:`~mape.serving.target.plan_replicas` and applies it to a
:class:`~mape.serving.target.ServingTarget`;
:class:`~mape.serving.local.LocalReplicaSet` is the target that runs
:mod:`mape.serving.model_server` processes on this machine,
:class:`~mape.serving.kubernetes.KubernetesDeployment` the one that scales a
Deployment in a Kubernetes cluster (and points its pod template at a model
version: :mod:`mape.serving.pod_template`); a canary's replicas run beside production's
(:mod:`mape.serving.canary`, :func:`mape.serving.factory.canary_target_for`). The
package imports only the interface eagerly, so that starting a model server
(``python -m mape.serving.model_server``) loads nothing it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mape.serving.target import ScaleBounds, ScaleStep, ServingHealth, ServingTarget, plan_replicas

if TYPE_CHECKING:
    from mape.serving.kubernetes import KubernetesDeployment
    from mape.serving.local import LocalReplicaSet, ReplicaRecord

__all__ = [
    "KubernetesDeployment",
    "LocalReplicaSet",
    "ReplicaRecord",
    "ScaleBounds",
    "ScaleStep",
    "ServingHealth",
    "ServingTarget",
    "plan_replicas",
]


def __getattr__(name: str) -> Any:
    if name in ("LocalReplicaSet", "ReplicaRecord"):
        from mape.serving import local

        return getattr(local, name)
    if name == "KubernetesDeployment":
        from mape.serving import kubernetes

        return kubernetes.KubernetesDeployment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
